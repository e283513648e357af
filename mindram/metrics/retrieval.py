"""Image-text retrieval recall@K (CLIP / CLIP_benchmark definitions), as a function and a streaming metric.

Definitions (those of CLIP_benchmark's ``zeroshot_retrieval``, the numbers CLIP-like papers report):

* ``text_to_image_R@k`` (CLIP_benchmark's ``image_retrieval_recall@k``): each caption queries all images;
  it is correct when its own image is among the k most similar images. Averaged over captions.
* ``image_to_text_R@k`` (CLIP_benchmark's ``text_retrieval_recall@k``): each image queries all captions;
  it is correct when ANY of its captions is among the k most similar captions. Averaged over images.

Similarity is the cosine (features are L2-normalised here unless ``normalize=False``). Ties are broken by
index (the lower index ranks first), so results are deterministic; CLIP_benchmark's ``torch.topk`` leaves tie
order unspecified, which only matters for exactly equal scores. An image without any caption cannot be
retrieved correctly; CLIP_benchmark counts it as a miss (0/0 recall), here it is left out of the image→text
mean with a warning. Similarities are computed ``chunk_size`` queries at a time, so memory stays
``O(chunk_size × N)`` for any dataset size.
"""
import logging

import numpy as np
from mindspore.train import Metric

from ..registry import MindFormerModuleType, MindFormerRegister
from ..utils.arrays import l2_normalize
from .classification import check_ks, label_ranks

logger = logging.getLogger(__name__)


def _features(value, name, normalize):
    value = value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)
    value = value.astype(np.float32, copy=False)
    if value.ndim != 2 or len(value) == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) array, got shape {value.shape}")
    if not np.isfinite(value).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    if normalize:
        value = l2_normalize(value)
    return value


def _best_positive_ranks(scores, positive):
    """Per row: rank of the best-ranked positive column (``-1`` where a row has no positive)."""
    masked = np.where(positive, scores, -np.inf)
    best = masked.max(axis=1)
    first = np.argmax(positive & (scores == best[:, None]), axis=1)  # lowest index among the best positives
    ranks = label_ranks(scores, first)
    return np.where(positive.any(axis=1), ranks, -1)


def retrieval_recall_at_k(image_features, text_features, text_to_image, ks=(1, 5, 10), normalize=True,
                          chunk_size=1024):
    """Recall@k in both directions: ``{"image_to_text_R@1": ..., "text_to_image_R@1": ..., ...}``.

    Args:
        image_features: ``(I, D)`` image embeddings.
        text_features: ``(T, D)`` caption embeddings.
        text_to_image: ``(T,)`` index of each caption's image (an image may have several captions).
        ks: the k values; a k larger than the gallery counts every query as correct.
        normalize: L2-normalise the features first (cosine similarity).
        chunk_size: queries scored at a time.
    """
    ks = check_ks(ks)
    images = _features(image_features, "image_features", normalize)
    texts = _features(text_features, "text_features", normalize)
    t2i = np.asarray(text_to_image.asnumpy() if hasattr(text_to_image, "asnumpy") else text_to_image).reshape(-1)
    if images.shape[1] != texts.shape[1]:
        raise ValueError(f"image and text features differ in width: {images.shape} vs {texts.shape}")
    if len(t2i) != len(texts) or not np.issubdtype(t2i.dtype, np.integer) or t2i.min() < 0 \
            or t2i.max() >= len(images):
        raise ValueError(f"text_to_image must hold one image index in [0, {len(images)}) per caption "
                         f"({len(texts)} captions); got shape {t2i.shape}, dtype {t2i.dtype}")
    t2i = t2i.astype(np.int64)
    text_ranks = np.concatenate([label_ranks(texts[s:s + chunk_size] @ images.T, t2i[s:s + chunk_size])
                                 for s in range(0, len(texts), chunk_size)])
    image_ranks = np.concatenate([
        _best_positive_ranks(images[s:s + chunk_size] @ texts.T,
                             t2i[None, :] == np.arange(s, min(s + chunk_size, len(images)))[:, None])
        for s in range(0, len(images), chunk_size)])
    captioned = image_ranks >= 0
    if not captioned.all():
        logger.warning("%d of %d images have no caption; they are left out of image_to_text recall",
                       int((~captioned).sum()), len(images))
    metrics = {}
    for k in ks:
        metrics[f"image_to_text_R@{k}"] = float((image_ranks[captioned] < k).mean())
    for k in ks:
        metrics[f"text_to_image_R@{k}"] = float((text_ranks < k).mean())
    return metrics


@MindFormerRegister.register(MindFormerModuleType.METRIC)
class RetrievalRecall(Metric):
    """Streaming retrieval recall@k: collect (image, caption) feature pairs batch by batch, score at ``eval()``.

    ``update(image_features, text_features, image_ids=None)`` takes row-aligned pairs. Without ``image_ids``
    every pair is its own image (open_clip's training-time retrieval metric). With ``image_ids`` (one hashable
    id per row — e.g. the file name), rows sharing an id are one image with several captions: the image
    feature is kept once (its first occurrence), as in CLIP_benchmark's Flickr/COCO evaluation.
    ``eval()`` returns :func:`retrieval_recall_at_k`'s dict.
    """

    def __init__(self, ks=(1, 5, 10)):
        super().__init__()
        self.ks = check_ks(ks)
        self.clear()

    def clear(self):
        """Forget every pair seen so far."""
        self._images, self._texts, self._t2i = [], [], []
        self._ids = {}
        self._num_images = 0
        self._mode = None

    def update(self, *inputs):
        """Accumulate one batch of ``(image_features, text_features[, image_ids])``."""
        if len(inputs) not in (2, 3):
            raise ValueError(f"RetrievalRecall.update expects (image_features, text_features[, image_ids]), "
                             f"got {len(inputs)} inputs")
        images = _features(self._convert_data(inputs[0]), "image_features", True)
        texts = _features(self._convert_data(inputs[1]), "text_features", True)
        if len(images) != len(texts):
            raise ValueError(f"update takes row-aligned pairs; got {len(images)} images and {len(texts)} captions")
        ids = inputs[2] if len(inputs) == 3 else None
        mode = "ids" if ids is not None else "pairs"
        if self._mode not in (None, mode):
            raise ValueError("RetrievalRecall.update: pass image_ids in every batch or in none")
        self._mode = mode
        if ids is None:
            self._images.append(images)
            self._t2i.append(np.arange(self._num_images, self._num_images + len(images)))
            self._num_images += len(images)
        else:
            ids = ids.asnumpy().tolist() if hasattr(ids, "asnumpy") else list(np.asarray(ids).tolist())
            if len(ids) != len(images):
                raise ValueError(f"got {len(ids)} image_ids for {len(images)} pairs")
            rows = []
            for row, key in enumerate(ids):
                if key not in self._ids:
                    self._ids[key] = self._num_images
                    self._num_images += 1
                    self._images.append(images[row:row + 1])
                rows.append(self._ids[key])
            self._t2i.append(np.asarray(rows, dtype=np.int64))
        self._texts.append(texts)

    def eval(self):
        """Recall@k over every pair since the last ``clear()``."""
        if not self._texts:
            raise RuntimeError("RetrievalRecall.eval() before any update(): no pairs")
        return retrieval_recall_at_k(np.concatenate(self._images), np.concatenate(self._texts),
                                     np.concatenate(self._t2i), self.ks, normalize=False)

"""Top-k accuracy of classification logits, as a function and as a streaming MindSpore metric.

A sample counts as correct at k when its label is among the k highest-scoring classes. Ties are
broken by class index (the lower index ranks first, as a stable sort would), so the result is
deterministic; with k >= the number of classes every sample is correct.
"""
import numpy as np
from mindspore.train import Metric

from ..registry import MindFormerModuleType, MindFormerRegister


def _numpy(value):
    return value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)


def check_ks(ks):
    """``ks`` as a sorted tuple of positive ints (a single int is accepted)."""
    ks = (ks,) if isinstance(ks, (int, np.integer)) and not isinstance(ks, bool) else tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0 for k in ks):
        raise ValueError(f"ks must be positive ints, got {ks!r}")
    return tuple(sorted(set(int(k) for k in ks)))


def label_ranks(scores, positives):
    """0-based rank of ``scores[i, positives[i]]`` in row i (ties: the lower column index ranks first)."""
    rows = np.arange(len(scores))
    pos = scores[rows, positives][:, None]
    before = np.arange(scores.shape[1])[None, :] < positives[:, None]
    return (scores > pos).sum(axis=1) + ((scores == pos) & before).sum(axis=1)


def topk_hits(logits, labels, ks=(1, 5)):
    """Number of correct samples at each k: ``{k: int}`` (the sums behind :func:`topk_accuracy`)."""
    ks = check_ks(ks)
    logits = _numpy(logits).astype(np.float32, copy=False)
    labels = _numpy(labels).reshape(-1)
    if logits.ndim != 2 or len(labels) != len(logits):
        raise ValueError(f"expected logits (N, C) and labels (N,), got {logits.shape} and {labels.shape}")
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0
                        or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels must be integer class indices in [0, {logits.shape[1]}), got dtype "
                         f"{labels.dtype}, range [{labels.min()}, {labels.max()}]")
    if not np.isfinite(logits).all():
        raise ValueError("logits contain NaN or infinite values")
    ranks = label_ranks(logits, labels.astype(np.int64))
    return {k: int((ranks < k).sum()) for k in ks}


def topk_accuracy(logits, labels, ks=(1, 5)):
    """Fraction of samples whose label is in their top-k classes: ``{"top1": float, "top5": float, ...}``.

    Args:
        logits: ``(N, C)`` scores (numpy or Tensor); any monotonic transform (softmax) gives the same result.
        labels: ``(N,)`` integer class indices.
        ks: the k values.
    """
    labels = _numpy(labels)
    if labels.size == 0:
        raise ValueError("topk_accuracy of an empty batch is undefined")
    return {f"top{k}": hits / labels.size for k, hits in topk_hits(logits, labels, ks).items()}


@MindFormerRegister.register(MindFormerModuleType.METRIC)
class TopKAccuracy(Metric):
    """Streaming top-k accuracy: ``update(logits, labels)`` per batch, ``eval()`` → ``{"top1": ..., "top5": ...}``."""

    def __init__(self, ks=(1, 5)):
        super().__init__()
        self.ks = check_ks(ks)
        self.clear()

    def clear(self):
        """Forget every batch seen so far."""
        self._hits = {k: 0 for k in self.ks}
        self._count = 0

    def update(self, *inputs):
        """Accumulate one batch: ``update(logits, labels)`` (numpy arrays or Tensors)."""
        if len(inputs) != 2:
            raise ValueError(f"TopKAccuracy.update expects (logits, labels), got {len(inputs)} inputs")
        logits, labels = (self._convert_data(x) for x in inputs)
        for k, hits in topk_hits(logits, labels, self.ks).items():
            self._hits[k] += hits
        self._count += int(np.size(labels))

    def eval(self):
        """Accuracy over every sample since the last ``clear()``."""
        if self._count == 0:
            raise RuntimeError("TopKAccuracy.eval() before any update(): no samples")
        return {f"top{k}": self._hits[k] / self._count for k in self.ks}

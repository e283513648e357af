"""Evaluation passes shared by the CLIP tasks: features over a dataset, zero-shot accuracy, retrieval recall."""
import logging
import os

import numpy as np
from tqdm.auto import tqdm

from ...errors import ConfigError, DataError
from ...metrics import retrieval_recall_at_k, topk_accuracy
from ...models.clip.zero_shot import (build_zero_shot_classifier, check_templates, encode_in_batches,
                                      imagenet_classnames_and_templates)
from ...registry import MindFormerModuleType, MindFormerRegister
from ...utils.arrays import l2_normalize

logger = logging.getLogger(__name__)
DEFAULT_TEMPLATES = ["a photo of a {}."]
#: how many unreadable items the metrics (``skipped``) and the evaluation's warning name
MAX_SKIPPED_LISTED = 20


def resolve_templates(spec):
    """``None`` → ["a photo of a {}."]; ``"imagenet"`` → OpenAI's 80 templates; a template or a list of them
    → that list, each with exactly one ``{}`` (:func:`~mindram.models.clip.zero_shot.check_templates`)."""
    if spec in (None, ""):
        return list(DEFAULT_TEMPLATES)
    if spec == "imagenet":
        return list(imagenet_classnames_and_templates()[1])
    if isinstance(spec, str):
        spec = [spec]
    if not isinstance(spec, (list, tuple)):
        raise ConfigError(f"zero_shot.templates: expected 'imagenet', a template with '{{}}' or a list of them, "
                          f"got {spec!r}")
    return check_templates(spec, "zero_shot.templates", callables=False)


def configured_class_names(task):
    """``zero_shot.class_names`` of the run config (``"imagenet"``: OpenAI's 1000 names), or None."""
    names = (task.config.get("zero_shot") or {}).get("class_names")
    if names == "imagenet":
        return list(imagenet_classnames_and_templates()[0])
    return list(names) if names else None


def class_names_for(task, source):
    names = configured_class_names(task)
    if names:
        return names
    names = getattr(source, "class_names", None)
    if not names:
        raise ConfigError(f"{type(source).__name__} has no class names; set zero_shot.class_names in the run config")
    return list(names)


def class_names_without_images(task):
    """Class names for prediction, never reading an evaluation image: ``zero_shot.class_names``, else what the
    ``eval_dataset`` loader's class reads without images (``read_class_names``: a meta file when
    ``dataset_dir`` is set, else the names it ships — CIFAR-100's official list), else ConfigError."""
    names = configured_class_names(task)
    if names:
        return names
    loader = dict(((task.config.get("eval_dataset") or {}).get("data_loader") or {}))
    cls = MindFormerRegister.get_cls(MindFormerModuleType.DATASET, loader.pop("type")) if loader.get("type") else None
    reader = getattr(cls, "read_class_names", None)
    if reader is not None:
        return list(reader(loader.pop("dataset_dir", None), **loader))
    if cls is not None and loader.get("dataset_dir", "-") not in (None, ""):
        return class_names_for(task, task.source("eval_dataset"))  # a lazy source: annotations, no image read
    raise ConfigError("predict: no class names: pass --candidate_labels LABEL ... (predict.candidate_labels), "
                      "set zero_shot.class_names in the run config, or give the dataset (--eval_dataset_dir)")


def _item_name(source, index):
    """The image path of record ``index`` of ``source`` (``item <index>`` for an in-memory image)."""
    image = source[index].image
    return os.fspath(image) if isinstance(image, (str, os.PathLike)) else f"item {index}"


def _captions(row, keep, first_image):
    """Token ids of the kept rows' captions and the (running) image index each one belongs to."""
    ids = row["input_ids"][keep]
    owners = np.arange(first_image, first_image + len(ids))
    if ids.ndim == 2:
        return ids, owners
    counts = row["num_captions"][keep]  # caption lists: (N, K, L) with num_captions valid rows each
    return np.concatenate([ids[i, :counts[i]] for i in range(len(ids))]), np.repeat(owners, counts)


def dataset_features(task, source, batch_size, with_text=True):
    """Image features (normalised), labels and (``with_text``) caption features of the eval set, one pass.

    An image that cannot be read is never replaced by another one here: the pipeline flags its row
    (``readable=False``), and the row is dropped with its label and its captions, so every metric is computed
    on the readable items alone; ``skipped`` names the dropped items (image paths). DataError when not one
    image can be read (nothing to measure)."""
    model = task.model
    data = task.dataset("eval_dataset", batch_size, shuffle=False, drop_remainder=False, return_index=True,
                        substitute_unreadable=False)
    columns = data.get_col_names()
    images, labels, texts, text_owner, skipped = [], [], [], [], []
    seen = 0
    for row in tqdm(data.create_dict_iterator(num_epochs=1, output_numpy=True), total=data.get_dataset_size(),
                    desc="evaluate", unit="batch"):
        keep = row["readable"]
        skipped.extend(row["index"][~keep].tolist())
        if not keep.any():
            continue
        pixels = row["pixel_values"][keep]
        images.append(encode_in_batches(model.get_image_features, pixels, batch_size))
        if "label" in columns:
            labels.append(row["label"][keep])
        if with_text:
            flat, owners = _captions(row, keep, seen)
            texts.append(encode_in_batches(model.get_text_features, flat, batch_size))
            text_owner.append(owners)
        seen += len(pixels)
    names = [_item_name(source, i) for i in sorted(skipped)]
    total = seen + len(names)
    if not images:
        raise DataError(f"eval_dataset: none of the {total} items of {type(source).__name__} could be read (e.g. "
                        f"{names[0]}); nothing to evaluate: fix or replace the image files (errors logged above)")
    if names:
        logger.warning("evaluation: %d of %d items of %s could not be read and are left out of every metric: %s%s",
                       len(names), total, type(source).__name__, ", ".join(names[:MAX_SKIPPED_LISTED]),
                       " ..." if len(names) > MAX_SKIPPED_LISTED else "")
    return {"image": l2_normalize(np.concatenate(images)),
            "label": np.concatenate(labels) if labels else None,
            "text": l2_normalize(np.concatenate(texts)) if texts else None,
            "text_owner": np.concatenate(text_owner) if text_owner else None,
            "skipped": names}


def skipped_metrics(features):
    """``num_skipped`` (unreadable items left out, as in the tagging evaluation) and ``skipped`` (the first
    :data:`MAX_SKIPPED_LISTED` of their image paths)."""
    return {"num_skipped": len(features["skipped"]), "skipped": features["skipped"][:MAX_SKIPPED_LISTED]}


def zero_shot_metrics(task, features, source):
    names = class_names_for(task, source)
    templates = resolve_templates((task.config.get("zero_shot") or {}).get("templates"))
    # cached on disk only for a task that evaluates fixed weights again (a training run's weights change)
    classifier = build_zero_shot_classifier(task.model, names, templates, tokenizer=task.tokenizer(),
                                            cache=getattr(task, "cache_zero_shot_classifier", False))
    logits = 100.0 * features["image"] @ classifier
    accuracy = topk_accuracy(logits, features["label"], ks=(1, 5) if len(names) >= 5 else (1,))
    metrics = {f"zero_shot_{k}": v for k, v in accuracy.items()}
    metrics.update({"num_classes": len(names), "chance_top1": 1.0 / len(names), "num_images": len(logits),
                    "num_templates": len(templates)})
    return metrics


def retrieval_metrics(features):
    metrics = retrieval_recall_at_k(features["image"], features["text"], features["text_owner"], ks=(1, 5, 10))
    metrics.update({"num_images": len(features["image"]), "num_texts": len(features["text"])})
    return metrics

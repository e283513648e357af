"""Evaluation passes shared by the CLIP tasks: features over a dataset, zero-shot accuracy, retrieval recall."""
import logging

import numpy as np
from tqdm.auto import tqdm

from ...errors import ConfigError
from ...metrics import retrieval_recall_at_k, topk_accuracy
from ...models.clip.zero_shot import build_zero_shot_classifier, encode_in_batches, imagenet_classnames_and_templates

logger = logging.getLogger(__name__)
DEFAULT_TEMPLATES = ["a photo of a {}."]


def _normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def resolve_templates(spec):
    """``None`` → ["a photo of a {}."]; ``"imagenet"`` → OpenAI's 80 templates; a list → itself."""
    if spec in (None, ""):
        return list(DEFAULT_TEMPLATES)
    if spec == "imagenet":
        return list(imagenet_classnames_and_templates()[1])
    if isinstance(spec, str):
        return [spec]
    if isinstance(spec, (list, tuple)) and all(isinstance(t, str) and "{}" in t for t in spec):
        return list(spec)
    raise ConfigError(f"zero_shot.templates: expected 'imagenet', a template with '{{}}' or a list of them, "
                      f"got {spec!r}")


def class_names_for(task, source):
    names = (task.config.get("zero_shot") or {}).get("class_names")
    if names == "imagenet":
        return list(imagenet_classnames_and_templates()[0])
    if names:
        return list(names)
    names = getattr(source, "class_names", None)
    if not names:
        raise ConfigError(f"{type(source).__name__} has no class names; set zero_shot.class_names in the run config")
    return list(names)


def dataset_features(task, batch_size, with_text=True):
    """Image features (normalised), labels and (``with_text``) caption features of the eval set, one pass."""
    model = task.model
    data = task.dataset("eval_dataset", batch_size, shuffle=False, drop_remainder=False)
    columns = data.get_col_names()
    images, labels, texts, text_owner = [], [], [], []
    seen = 0
    for row in tqdm(data.create_dict_iterator(num_epochs=1, output_numpy=True), total=data.get_dataset_size(),
                    desc="evaluate", unit="batch"):
        pixels = row["pixel_values"]
        images.append(encode_in_batches(model.get_image_features, pixels, batch_size))
        if "label" in columns:
            labels.append(row["label"])
        if not with_text:
            seen += len(pixels)
            continue
        ids = row["input_ids"]
        if ids.ndim == 3:  # caption lists: (N, K, L) with num_captions valid rows each
            counts = row["num_captions"]
            flat = np.concatenate([ids[i, :counts[i]] for i in range(len(ids))])
            owners = np.concatenate([np.full(counts[i], seen + i) for i in range(len(ids))])
        else:
            flat, owners = ids, np.arange(seen, seen + len(ids))
        texts.append(encode_in_batches(model.get_text_features, flat, batch_size))
        text_owner.append(owners)
        seen += len(pixels)
    return {"image": _normalize(np.concatenate(images)),
            "label": np.concatenate(labels) if labels else None,
            "text": _normalize(np.concatenate(texts)) if texts else None,
            "text_owner": np.concatenate(text_owner) if text_owner else None}


def zero_shot_metrics(task, features, source):
    names = class_names_for(task, source)
    templates = resolve_templates((task.config.get("zero_shot") or {}).get("templates"))
    classifier = build_zero_shot_classifier(task.model, names, templates)
    logits = 100.0 * features["image"] @ classifier
    accuracy = topk_accuracy(logits, features["label"], ks=(1, 5) if len(names) >= 5 else (1,))
    metrics = {f"zero_shot_{k}": v for k, v in accuracy.items()}
    metrics.update({"num_classes": len(names), "chance_top1": 1.0 / len(names), "num_images": len(logits),
                    "num_templates": len(templates)})
    return metrics


def retrieval_metrics(features):
    return retrieval_recall_at_k(features["image"], features["text"], features["text_owner"], ks=(1, 5, 10))

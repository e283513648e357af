"""Multi-label tagging metrics (recognize-anything's ``ram/utils/metrics.py`` definitions) and the
annotation formats of its evaluation sets.

- AP of class k: images ordered by score, descending; precision@i at every positive position,
  summed and divided by (#positives + 1e-8). mAP: plain mean over classes.
- CP / CR: per-class precision TP/(TP+FP+1e-9) and recall TP/(TP+FN+1e-9), averaged over classes;
  CF1 = 2·CP·CR/(CP+CR) (conventional; the reference computes no F1).
Ties in the AP ordering are broken by image index (the reference's unstable argsort leaves them
unspecified); with continuous scores ties do not occur.
"""
import logging
from pathlib import Path

import numpy as np
from mindspore.train import Metric

from ..errors import DataError
from ..registry import MindFormerModuleType, MindFormerRegister
from ..utils.tag_lists import read_tag_list

logger = logging.getLogger(__name__)


def average_precision(scores, targets):
    """Per-class AP, shape (C,), for ``scores``/``targets`` of shape (N, C)."""
    scores, targets = np.asarray(scores, np.float64), np.asarray(targets) > 0
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must be equal (N, C) shapes")
    order = np.argsort(-scores, axis=0, kind="stable")
    hits = np.take_along_axis(targets, order, axis=0)
    precision_at = np.cumsum(hits, axis=0) / np.arange(1, len(scores) + 1)[:, None]
    return (precision_at * hits).sum(axis=0) / (hits.sum(axis=0) + 1e-8)


def precision_recall(predictions, targets):
    """``{'CP', 'CR', 'CF1'}`` from boolean (N, C) prediction and target matrices."""
    predictions, targets = np.asarray(predictions) > 0, np.asarray(targets) > 0
    tp = (predictions & targets).sum(axis=0)
    fp = (predictions & ~targets).sum(axis=0)
    fn = (~predictions & targets).sum(axis=0)
    cp = float(np.mean(tp / (tp + fp + 1e-9)))
    cr = float(np.mean(tp / (tp + fn + 1e-9)))
    return {"CP": cp, "CR": cr, "CF1": 2 * cp * cr / (cp + cr) if cp + cr > 0 else 0.0}


def tagging_metrics(scores, targets, thresholds):
    """mAP, CP, CR, CF1 with a tag predicted when ``score >= threshold`` (batch_inference's rule)."""
    scores = np.asarray(scores)
    predictions = scores >= np.broadcast_to(np.asarray(thresholds, scores.dtype), scores.shape[1:])
    return {"mAP": float(np.mean(average_precision(scores, targets))), **precision_recall(predictions, targets),
            "num_images": int(len(scores)), "num_classes": int(scores.shape[1])}


def read_taglist(path):
    """An evaluation set's tag list: one tag per line, blank lines left out (names may repeat: imagenet_multi
    lists 'missile' twice); :func:`mindram.utils.tag_lists.read_tag_list` with ``skip_blank``."""
    return read_tag_list(path, skip_blank=True)


def read_annotations(path, taglist):
    """Read an annotation file → (image ids, (N, C) uint8 targets).

    Two formats, as in the recognize-anything evaluation sets: ``image,name,name,…`` (OpenImages,
    every listed name sets all of its indices) and ``image,i j k`` (ImageNet-multi, HICO: 0-based
    indices separated by spaces after one comma). Unknown names/indices are errors naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    positions = {}
    for index, name in enumerate(taglist):
        positions.setdefault(name, []).append(index)
    images, rows = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        image, _, rest = line.partition(",")
        row = np.zeros(len(taglist), np.uint8)
        fields = [f for f in rest.split(",") if f.strip()]
        if len(fields) == 1 and all(tok.isdigit() for tok in fields[0].split()):
            for tok in fields[0].split():
                if int(tok) >= len(taglist):
                    raise DataError(f"{path}:{number}: class index {tok} out of range for {len(taglist)} tags")
                row[int(tok)] = 1
        else:
            for name in fields:
                if name not in positions:
                    raise DataError(f"{path}:{number}: tag {name!r} is not in the tag list")
                row[positions[name]] = 1
        images.append(image.strip())
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no annotation lines")
    return images, np.stack(rows)


@MindFormerRegister.register(MindFormerModuleType.METRIC)
class MultiLabelTaggingMetric(Metric):
    """Streaming mAP/CP/CR/CF1: ``update(scores, targets)`` per batch, ``eval()`` at the end."""

    def __init__(self, thresholds=0.5):
        super().__init__()
        self.thresholds = thresholds
        self.clear()

    def clear(self):
        self._scores, self._targets = [], []

    def update(self, *inputs):
        scores, targets = (x.asnumpy() if hasattr(x, "asnumpy") else np.asarray(x) for x in inputs[:2])
        self._scores.append(scores)
        self._targets.append(targets)

    def eval(self):
        if not self._scores:
            raise RuntimeError("MultiLabelTaggingMetric.eval() before any update()")
        return tagging_metrics(np.concatenate(self._scores), np.concatenate(self._targets), self.thresholds)

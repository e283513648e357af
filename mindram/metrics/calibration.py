"""Per-tag decision thresholds chosen on a labelled set (what neither recognize-anything nor PaddleClas ships).

``best_thresholds(scores, targets, default, target)`` picks, for every tag with at least one positive, the
threshold that maximises that tag's F1 (``target="f1"``) or the lowest one whose precision reaches ``p``
(``target="precision@p"``, i.e. the most recall at that precision). A tag predicted when ``score >= threshold``
(the evaluation's rule). The threshold is placed halfway between the last score kept and the next lower one, so
the calibration set's predictions are exactly the optimal ones while unseen scores near the boundary are not
decided by a tie. Tags without positives (nothing to calibrate on), and precision targets a tag never reaches,
keep their ``default`` threshold.
"""
import numpy as np

from ..errors import ConfigError


def parse_target(target):
    """``("f1", None)`` or ``("precision", p)`` from ``"f1"`` / ``"precision@0.9"``; ConfigError otherwise."""
    if target == "f1":
        return "f1", None
    if isinstance(target, str) and target.startswith("precision@"):
        try:
            p = float(target.split("@", 1)[1])
        except ValueError:
            p = -1.0
        if 0.0 < p <= 1.0:
            return "precision", p
    raise ConfigError(f"calibration target {target!r}: expected 'f1' or 'precision@P' with 0 < P <= 1 "
                      "(e.g. precision@0.9)")


def _column_threshold(scores, positives, kind, p):
    """The threshold of one tag, or None (keep the default)."""
    num_pos = int(positives.sum())
    if num_pos == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], positives[order]
    # candidate cut after position k keeps ranked[:k + 1]; only cut where the next score is lower (ties together)
    cuts = np.flatnonzero(np.append(ranked[1:] < ranked[:-1], True))
    tp = np.cumsum(hits)[cuts].astype(np.float64)
    kept = (cuts + 1).astype(np.float64)
    if kind == "f1":
        quality = 2 * tp / (kept + num_pos)      # F1 = 2TP / (2TP + FP + FN) = 2TP / (kept + positives)
        best = int(np.argmax(quality))           # the highest-threshold cut among equal F1s
    else:
        reaching = np.flatnonzero(tp / kept >= p)
        if reaching.size == 0:
            return None
        best = int(reaching[-1])                 # the most recall at precision >= p
    cut = cuts[best]
    kept_score = np.float32(ranked[cut])
    lower = np.float32(ranked[cut + 1]) if cut + 1 < len(ranked) else np.float32(-np.inf)
    middle = np.float32((np.float64(kept_score) + max(np.float64(lower), np.float64(kept_score) - 1e-3)) / 2)
    return float(middle if lower < middle <= kept_score else kept_score)  # float32 thresholds, as compared


def best_thresholds(scores, targets, default, target="f1"):
    """``(thresholds float32 (C,), info)`` for ``scores``/``targets`` of shape (N, C) (module docstring).

    ``default``: the thresholds kept where nothing is calibrated (a number or (C,)); ``info``:
    ``num_calibrated``, ``num_without_positives``, ``num_unreached`` (precision targets) and ``target``.
    """
    scores = np.asarray(scores, np.float64)
    targets = np.asarray(targets) > 0
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must be equal (N, C) shapes")
    kind, p = parse_target(target)
    thresholds = np.array(np.broadcast_to(np.asarray(default, np.float32), scores.shape[1:]), np.float32)
    info = {"target": target, "num_calibrated": 0, "num_without_positives": 0, "num_unreached": 0}
    for c in range(scores.shape[1]):
        if not targets[:, c].any():
            info["num_without_positives"] += 1
            continue
        value = _column_threshold(scores[:, c], targets[:, c], kind, p)
        if value is None:
            info["num_unreached"] += 1
            continue
        thresholds[c] = value
        info["num_calibrated"] += 1
    return thresholds, info

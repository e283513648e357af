"""Per-tag threshold calibration (mindram.metrics.calibration) against brute force."""
import numpy as np
import pytest

from mindram.errors import ConfigError
from mindram.metrics.calibration import best_thresholds, parse_target
from mindram.metrics.multilabel import tagging_metrics


def data(n=400, c=7, seed=0):
    rng = np.random.default_rng(seed)
    targets = rng.random((n, c)) < 0.25
    scores = np.clip(0.35 * targets + 0.65 * rng.random((n, c)), 0, 1).astype(np.float32)
    scores[:40, 0] = 0.5  # ties
    return scores, targets


def f1(scores, targets, threshold):
    predicted = scores >= np.float32(threshold)
    return 2 * (predicted & targets).sum() / (predicted.sum() + targets.sum())


def test_f1_thresholds_reach_the_best_f1_of_every_tag_and_raise_cf1():
    scores, targets = data()
    default = np.full(scores.shape[1], 0.9, np.float32)
    thresholds, info = best_thresholds(scores, targets, default, "f1")
    assert info["num_calibrated"] == scores.shape[1] and thresholds.dtype == np.float32
    for c in range(scores.shape[1]):
        best = max(f1(scores[:, c], targets[:, c], t) for t in np.unique(scores[:, c]))
        assert f1(scores[:, c], targets[:, c], thresholds[c]) == pytest.approx(best, abs=1e-12)
        # strictly between two scores: no score of the set sits on the boundary
        assert not np.any(scores[:, c] == thresholds[c])
    assert tagging_metrics(scores, targets, thresholds)["CF1"] > tagging_metrics(scores, targets, default)["CF1"] + 0.2


def test_precision_target_gives_the_most_recall_at_that_precision():
    scores, targets = data(seed=1)
    thresholds, info = best_thresholds(scores, targets, 0.5, "precision@0.8")
    for c in range(scores.shape[1]):
        s, y = scores[:, c], targets[:, c]
        feasible = [t for t in np.unique(s) if (y[s >= t]).mean() >= 0.8]
        if not feasible:
            assert thresholds[c] == np.float32(0.5)
            continue
        predicted = s >= thresholds[c]
        assert y[predicted].mean() >= 0.8
        assert predicted.sum() == max((s >= t).sum() for t in feasible)
    assert info["num_calibrated"] + info["num_unreached"] == scores.shape[1]


def test_tags_without_positives_and_unreachable_precision_keep_the_default():
    scores, targets = data(c=3)
    targets[:, 1] = False
    default = np.array([0.6, 0.7, 0.8], np.float32)
    thresholds, info = best_thresholds(scores, targets, default, "f1")
    assert thresholds[1] == np.float32(0.7) and info["num_without_positives"] == 1
    hopeless = np.zeros_like(targets)
    hopeless[0, 0] = True
    noisy = scores.copy()
    noisy[0, 0] = 0.0  # the only positive scores lowest: precision 1.0 is never reached
    thresholds, info = best_thresholds(noisy, hopeless, default, "precision@1.0")
    assert thresholds[0] == np.float32(0.6) and info["num_unreached"] == 1


def test_adjacent_float32_scores_keep_the_optimal_predictions():
    a = np.float32(0.5)
    b = np.nextafter(a, np.float32(0))  # no float32 between them
    scores = np.array([[a], [b]], np.float32)
    targets = np.array([[True], [False]])
    (threshold,), _ = best_thresholds(scores, targets, 0.9, "f1")
    assert (scores[:, 0] >= threshold).tolist() == [True, False]


@pytest.mark.parametrize("bad", ["f2", "precision@0", "precision@1.5", "precision@x", None])
def test_bad_target_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="calibration target"):
        parse_target(bad)

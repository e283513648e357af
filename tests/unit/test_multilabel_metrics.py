"""mAP / CP / CR against hand-computed values; annotation formats of the RAM evaluation sets."""
import numpy as np
import pytest

from mindram.errors import DataError
from mindram.metrics import MultiLabelTaggingMetric, average_precision, precision_recall, read_annotations, tagging_metrics
from tests.conftest import FIXTURES


def test_average_precision_by_hand():
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.3, 0.6], [0.2, 0.4]])
    targets = np.array([[1, 0], [0, 0], [1, 1], [0, 1]])
    # class 0: order 0,1,2,3 -> hits 1,0,1,0 -> (1/1 + 2/3) / 2
    # class 1: order 1,2,3,0 -> hits 0,1,1,0 -> (1/2 + 2/3) / 2
    np.testing.assert_allclose(average_precision(scores, targets), [(1 + 2 / 3) / 2, (0.5 + 2 / 3) / 2], rtol=1e-7)


def test_precision_recall_by_hand():
    predictions = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    targets = np.array([[1, 0], [0, 0], [1, 1], [0, 1]])
    # class 0: TP 1, FP 1, FN 1 -> P 1/2, R 1/2; class 1: TP 1, FP 1, FN 1 -> P 1/2, R 1/2
    result = precision_recall(predictions, targets)
    assert result["CP"] == pytest.approx(0.5) and result["CR"] == pytest.approx(0.5)
    assert result["CF1"] == pytest.approx(0.5)


def test_threshold_is_inclusive_and_streaming_matches():
    scores = np.array([[0.5, 0.2], [0.4, 0.9]])
    targets = np.array([[1, 0], [0, 1]])
    result = tagging_metrics(scores, targets, [0.5, 0.9])   # both exactly at threshold -> predicted
    assert result["CP"] == pytest.approx(1.0) and result["CR"] == pytest.approx(1.0)
    assert result["mAP"] == pytest.approx(1.0)
    metric = MultiLabelTaggingMetric(thresholds=[0.5, 0.9])
    metric.update(scores[:1], targets[:1])
    metric.update(scores[1:], targets[1:])
    assert metric.eval() == result


def test_read_annotations_both_formats(tmp_path):
    taglist = ["dog", "cat", "missile", "missile"]
    names = tmp_path / "names.txt"
    names.write_text("test/a,dog,missile\ntest/b\ntest/c,cat\n")
    ids, targets = read_annotations(names, taglist)
    assert ids == ["test/a", "test/b", "test/c"]
    np.testing.assert_array_equal(targets, [[1, 0, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0]])
    indices = tmp_path / "idx.txt"
    indices.write_text("x.JPEG,0 2\ny.JPEG,\n")
    _, targets = read_annotations(indices, taglist)
    np.testing.assert_array_equal(targets, [[1, 0, 1, 0], [0, 0, 0, 0]])
    (tmp_path / "bad.txt").write_text("z,unicorn\n")
    with pytest.raises(DataError, match=r"bad.txt:1: tag 'unicorn' is not in the tag list"):
        read_annotations(tmp_path / "bad.txt", taglist)


@pytest.mark.parametrize("dataset,taglist,annots,count", [
    ("openimages_common_214", "openimages_common_214_ram_taglist.txt", "openimages_common_214_ram_annots.txt", 203),
    ("imagenet_multi", "imagenet_multi_1000_taglist.txt", "imagenet_multi_1000_annots.txt", 905),
    ("hico", "hico_600_taglist.txt", "hico_600_annots.txt", 464),
])
def test_shipped_evaluation_sets_parse(dataset, taglist, annots, count):
    """Samples of the real evaluation sets (tests/fixtures/ram_eval: full tag lists, annotation lines
    chosen so that every class keeps a positive) in both annotation formats."""
    from mindram.metrics import read_taglist
    folder = FIXTURES / "ram_eval" / dataset
    tags = read_taglist(folder / taglist)
    ids, targets = read_annotations(folder / annots, tags)
    assert len(ids) == count and targets.shape == (count, len(tags))
    assert (targets.sum(axis=0) > 0).all(), "every class has a positive (docs/ram.md#evaluation)"

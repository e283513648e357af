"""Metrics against values computed by hand, streaming == one-shot, CLIP_benchmark's retrieval definition."""
import logging

import numpy as np
import pytest

from mindram.metrics import RetrievalRecall, TopKAccuracy, retrieval_recall_at_k, topk_accuracy
from mindram.registry import MindFormerModuleType, MindFormerRegister

LOGITS = np.array([[0.1, 0.5, 0.4],    # label 2: one class above -> rank 1
                   [0.9, 0.05, 0.05],  # label 0: rank 0
                   [0.2, 0.2, 0.6],    # label 1: 0.6 above, tie with class 0 (lower index first) -> rank 2
                   [0.3, 0.3, 0.4]])   # label 0: rank 1 (the tie with class 1 ranks class 0 first)
LABELS = np.array([2, 0, 1, 0])

# 3 images (axes) and 5 captions; caption -> image: 0, 0, 1, 2, 2
IMAGES = np.eye(3, dtype=np.float32)
TEXTS = np.array([[1, 0.5, 0], [0, 1, 0.2], [0.6, 0.5, 0], [0.9, 0, 0.5], [0, 0.3, 1]], np.float32)
T2I = np.array([0, 0, 1, 2, 2])
# cosine ranks by hand. text->image: T0 0, T1 2 (I1 .98, I2 .20 above I0 0), T2 1 (I0 .77 > I1 .64), T3 1, T4 0.
# image->text: I0 sims (.89, 0, .77, .87, 0): its captions T0/T1, best T0 at rank 0 (T1 alone is rank 3: "any").
#              I1 sims (.45, .98, .64, 0, .29): its caption T2 is behind T1 -> rank 1.
#              I2 sims (0, .20, 0, .49, .96): its captions T3/T4, best T4 at rank 0.
EXPECTED_RECALL = {"image_to_text_R@1": 2 / 3, "image_to_text_R@2": 1.0, "image_to_text_R@3": 1.0,
                   "text_to_image_R@1": 2 / 5, "text_to_image_R@2": 4 / 5, "text_to_image_R@3": 1.0}


def test_topk_accuracy_by_hand():
    assert topk_accuracy(LOGITS, LABELS, ks=(1, 2, 3)) == {"top1": 0.25, "top2": 0.75, "top3": 1.0}
    assert topk_accuracy(LOGITS, LABELS, ks=5) == {"top5": 1.0}  # k beyond the class count: always right


def test_topk_streaming_equals_one_shot_and_clears():
    metric = TopKAccuracy(ks=(1, 2))
    metric.update(LOGITS[:1], LABELS[:1])
    metric.update(LOGITS[1:], LABELS[1:])
    assert metric.eval() == topk_accuracy(LOGITS, LABELS, ks=(1, 2))
    metric.clear()
    with pytest.raises(RuntimeError):
        metric.eval()
    metric.update(LOGITS[1:2], LABELS[1:2])
    assert metric.eval() == {"top1": 1.0, "top2": 1.0}


@pytest.mark.parametrize("labels,logits", [(np.array([0, 3, 1, 1]), LOGITS), (np.array([0.0, 1, 1, 1]), LOGITS),
                                           (LABELS[:3], LOGITS), (LABELS, LOGITS * np.nan)])
def test_topk_rejects_bad_input(labels, logits):
    with pytest.raises(ValueError):
        topk_accuracy(logits, labels)


def test_retrieval_recall_by_hand():
    got = retrieval_recall_at_k(IMAGES, TEXTS, T2I, ks=(1, 2, 3))
    assert got == pytest.approx(EXPECTED_RECALL)
    assert list(got) == list(EXPECTED_RECALL)


def test_retrieval_recall_chunking_and_scale_invariance():
    got = retrieval_recall_at_k(IMAGES * 3, TEXTS * 0.5, T2I, ks=(1, 2, 3), chunk_size=2)
    assert got == pytest.approx(EXPECTED_RECALL)


def test_image_without_caption_is_left_out_with_warning(caplog):
    images = np.vstack([IMAGES, [[1, 1, 1]]])
    with caplog.at_level(logging.WARNING):
        got = retrieval_recall_at_k(images, TEXTS, T2I, ks=(1, 2, 3))
    assert got["image_to_text_R@1"] == pytest.approx(2 / 3)
    assert "1 of 4 images have no caption" in caplog.text


def test_retrieval_rejects_bad_mapping():
    with pytest.raises(ValueError, match="text_to_image"):
        retrieval_recall_at_k(IMAGES, TEXTS, np.array([0, 0, 1, 2, 3]))
    with pytest.raises(ValueError, match="text_to_image"):
        retrieval_recall_at_k(IMAGES, TEXTS, T2I[:4])


def test_retrieval_streaming_with_image_ids_equals_one_shot():
    metric = RetrievalRecall(ks=(1, 2, 3))
    pairs = IMAGES[T2I]  # one row per caption, images repeated
    ids = ["a", "a", "b", "c", "c"]
    metric.update(pairs[:3], TEXTS[:3], ids[:3])
    metric.update(pairs[3:], TEXTS[3:], ids[3:])
    assert metric.eval() == pytest.approx(EXPECTED_RECALL)
    with pytest.raises(ValueError, match="image_ids"):
        metric.update(pairs[:1], TEXTS[:1])


def test_retrieval_streaming_pairs_are_one_to_one():
    rng = np.random.default_rng(0)
    images, texts = rng.standard_normal((7, 4)), rng.standard_normal((7, 4))
    metric = RetrievalRecall(ks=(1, 5))
    metric.update(images[:4], texts[:4])
    metric.update(images[4:], texts[4:])
    assert metric.eval() == retrieval_recall_at_k(images, texts, np.arange(7), ks=(1, 5))


def test_metrics_are_registered():
    assert MindFormerRegister.get_cls(MindFormerModuleType.METRIC, "TopKAccuracy") is TopKAccuracy
    assert MindFormerRegister.get_cls(MindFormerModuleType.METRIC, "RetrievalRecall") is RetrievalRecall


def test_matches_clip_benchmark_recall_on_random_data():
    """CLIP_benchmark's ``recall_at_k`` (torch.topk, any positive in the top k), re-implemented as written there."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    images, texts = rng.standard_normal((20, 8)), rng.standard_normal((60, 8))
    t2i = rng.integers(0, 20, 60)
    t2i[:20] = np.arange(20)  # every image has a caption

    def recall(scores, positive, k):  # clip_benchmark/metrics/zeroshot_retrieval.py
        top = torch.topk(scores, k, dim=1)[1]
        onehot = torch.nn.functional.one_hot(top, num_classes=scores.shape[1])
        return ((onehot * positive.view(len(scores), 1, -1)).sum(dim=(1, 2)) / positive.sum(dim=1) > 0).float().mean()

    norm = lambda x: torch.nn.functional.normalize(torch.from_numpy(x).float(), dim=-1)  # noqa: E731
    scores = norm(texts) @ norm(images).T
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(60), torch.from_numpy(t2i)] = True
    got = retrieval_recall_at_k(images, texts, t2i, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert got[f"text_to_image_R@{k}"] == pytest.approx(recall(scores, positive, k).item())
        assert got[f"image_to_text_R@{k}"] == pytest.approx(recall(scores.T, positive.T, k).item())

"""Micro-batches of a bounded token count (mindram.utils.batching)."""
import pytest

from mindram.utils.batching import micro_batch_size, micro_batches


@pytest.mark.parametrize("batch,tokens,limit,expected", [
    (32, 257, 6400, 16),     # ViT-L/14 at batch 32: two calls of 16
    (32, 197, 6400, 32),     # ViT-B/16 at batch 32 fits
    (128, 50, 6400, 128),    # ViT-B/32
    (32, 257, 2560, 8),      # ONNX Runtime's budget
    (32, 257, None, 32),     # no limit
    (7, 1000, 10, 1),        # one item over the budget still runs, alone
    (0, 257, 6400, 1),
])
def test_micro_batch_size(batch, tokens, limit, expected):
    assert micro_batch_size(batch, tokens, limit) == expected


def test_micro_batches_cover_the_batch_in_order():
    assert micro_batches(5, 17, 40) == [(0, 2), (2, 4), (4, 5)]
    assert micro_batches(3, 17, None) == [(0, 3)]
    assert micro_batches(0, 17, 40) == []

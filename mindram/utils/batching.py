"""Splitting a large inference batch into micro-batches of a bounded number of tokens.

A transformer tower's work grows linearly with the batch, but its speed per image does not stay flat: on this
kind of CPU a ViT-L/14 image tower ran 1.21 images/s at batch 32 (8,224 tokens per matrix product) and 1.71 in
two calls of 16, with a lower peak memory; ViT-B/16 at batch 32 (6,304 tokens) was fastest unsplit; ONNX Runtime
preferred calls of ~2,000 tokens (docs/performance.md, "Micro-batches"). Models and backends therefore run a
batch as consecutive calls of at most ``max_tokens`` tokens, a power of two items each (so a fixed batch size
compiles at most two graph shapes), and concatenate the outputs — every item's result is computed alone, so the
split changes nothing but the speed and the memory.
"""


def micro_batch_size(batch, tokens_per_item, max_tokens):
    """Items per call: ``batch`` when it fits in ``max_tokens`` (or ``max_tokens`` is None), else the largest power
    of two whose items hold at most ``max_tokens`` tokens (at least 1)."""
    batch = int(batch)
    if max_tokens is None or batch * int(tokens_per_item) <= int(max_tokens):
        return max(batch, 1)
    size = 1
    while 2 * size * int(tokens_per_item) <= int(max_tokens):
        size *= 2
    return size


def micro_batches(batch, tokens_per_item, max_tokens):
    """``[(start, stop), ...]`` covering ``range(batch)`` in calls of :func:`micro_batch_size` items."""
    size = micro_batch_size(batch, tokens_per_item, max_tokens)
    return [(start, min(start + size, batch)) for start in range(0, int(batch), size)]

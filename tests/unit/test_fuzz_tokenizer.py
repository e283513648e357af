"""Seeded fuzzing of the CLIP tokenizer: random unicode and byte strings, huge and hostile context lengths.

Every call gives a well-formed ``(N, context_length)`` int32 array or a typed error (ConfigError for a bad
context_length, TypeError for a non-string text), within bounded time and memory."""
import time
import tracemalloc

import numpy as np
import pytest

from mindram.errors import ConfigError
from mindram.models.clip.tokenizer import (MAX_CONTEXT_LENGTH, MAX_CONTEXT_LENGTH_ENV, CLIPTokenizer,
                                           _default_tokenizer, tokenize)

SOT, EOT, VOCAB = 49406, 49407, 49408
SEED = 20240611
BUDGET_S = 15.0


def random_text(rng):
    """A random string: printable ASCII, any code point (surrogates included), bytes decoded leniently, or a
    long run of one word."""
    kind = rng.integers(5)
    n = int(rng.integers(0, 200))
    if kind == 0:
        return "".join(chr(c) for c in rng.integers(0x20, 0x7F, n))
    if kind == 1:
        return "".join(chr(c) for c in rng.integers(0, 0x110000, n))
    if kind == 2:
        return bytes(rng.integers(0, 256, n, dtype=np.uint8)).decode("utf-8", errors="surrogateescape")
    if kind == 3:
        return bytes(rng.integers(0, 256, n, dtype=np.uint8)).decode("latin-1")
    return ("x" * int(rng.integers(1, 5_000))) + " &amp; <start_of_text>" * int(rng.integers(0, 3))


def check_row(row, length):
    assert row.dtype == np.int32 and row.shape == (length,)
    assert row[0] == SOT and (row >= 0).all() and (row < VOCAB).all()
    end = int(np.flatnonzero(row == EOT)[0])
    assert (row[end + 1:] == 0).all() and (row[1:end] != EOT).all()


def test_random_texts_give_well_formed_ids():
    rng = np.random.default_rng(SEED)
    tokenizer = _default_tokenizer()
    start = time.monotonic()
    for _ in range(400):
        texts = [random_text(rng) for _ in range(int(rng.integers(1, 4)))]
        length = int(rng.integers(2, 100))
        ids = tokenize(texts, context_length=length)
        assert ids.shape == (len(texts), length)
        for text, row in zip(texts, ids):
            check_row(row, length)
            full = tokenizer.encode(text)       # the uncut encoding: the row is its first length - 2 ids
            assert row[1:1 + min(len(full), length - 2)].tolist() == full[:length - 2]
    assert time.monotonic() - start < BUDGET_S


@pytest.fixture(scope="module")
def clip_tokenizer():
    return CLIPTokenizer()


@pytest.mark.parametrize("length", [10**9, 2**31, 2**63, MAX_CONTEXT_LENGTH + 1, -1, 0, 1])
def test_hostile_context_lengths_are_refused_at_once(length, clip_tokenizer):
    _default_tokenizer()   # loaded before measuring
    tracemalloc.start()
    try:
        start = time.monotonic()
        with pytest.raises(ConfigError, match=f"context_length.*{length}"):
            tokenize("a", context_length=length)
        with pytest.raises(ConfigError, match="context_length"):
            clip_tokenizer("a", max_length=length)
        with pytest.raises(ConfigError, match="context_length"):
            CLIPTokenizer(context_length=length)   # refused before the vocabulary is read
        elapsed, peak = time.monotonic() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0 and peak < 1 << 20


@pytest.mark.parametrize("length", [2.5, "77", None, True, np.float32(77)])
def test_context_length_of_another_type_is_a_config_error(length):
    with pytest.raises(ConfigError, match="context_length must be an int"):
        tokenize("a", context_length=length)


def test_the_largest_context_length_works_and_the_limit_can_be_raised(monkeypatch):
    ids = tokenize(["a photo", "x " * 10_000], context_length=MAX_CONTEXT_LENGTH)
    assert ids.shape == (2, MAX_CONTEXT_LENGTH)
    check_row(ids[0], MAX_CONTEXT_LENGTH)
    assert ids[1, MAX_CONTEXT_LENGTH - 1] == EOT                # 10,000 words cut to fit, end token kept last
    monkeypatch.setenv(MAX_CONTEXT_LENGTH_ENV, str(MAX_CONTEXT_LENGTH + 100))
    assert tokenize("a", context_length=MAX_CONTEXT_LENGTH + 100).shape == (1, MAX_CONTEXT_LENGTH + 100)
    monkeypatch.setenv(MAX_CONTEXT_LENGTH_ENV, "lots")
    with pytest.raises(ConfigError, match=MAX_CONTEXT_LENGTH_ENV):
        tokenize("a", context_length=77)

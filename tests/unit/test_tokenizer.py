"""Unit tests of the CLIP BPE tokenizer (no torch / open_clip needed).

Expected ids were produced once with open_clip 3.3.0 ``get_tokenizer('ViT-B-32')``.
"""
import gzip
import shutil

import numpy as np
import pytest

from mindram.models.clip.tokenizer import (
    VOCAB_FILENAME, BPETokenizer, CLIPTokenizer, default_vocab_path, tokenize)

SOT, EOT = 49406, 49407
REFERENCE_IDS = {
    "a photo of a cat": [SOT, 320, 1125, 539, 320, 2368, EOT],
    "It's a DOG!!": [SOT, 585, 568, 320, 1929, 748, EOT],
    "&lt;b&gt;café&lt;/b&gt; 2024": [SOT, 283, 321, 285, 15304, 34308, 321, 285, 273, 271, 273, 275, EOT],
    "🐱 猫": [SOT, 22979, 163, 234, 360, EOT],
}


@pytest.mark.parametrize("text, expected", REFERENCE_IDS.items())
def test_known_ids(text, expected):
    out = tokenize(text)
    assert out.shape == (1, 77) and out.dtype == np.int32
    assert out[0, :len(expected)].tolist() == expected
    assert not out[0, len(expected):].any()


def test_batch_shape_dtype_and_padding():
    out = tokenize(["a photo of a cat", "", "dog"], context_length=10)
    assert out.shape == (3, 10) and out.dtype == np.int32
    assert out[1].tolist() == [SOT, EOT] + [0] * 8
    assert tokenize([]).shape == (0, 77)


def test_truncation_ends_with_eot():
    out = tokenize("cat " * 200)
    assert out[0, 0] == SOT and out[0, -1] == EOT
    assert (out[0, 1:-1] == 2368).all()
    assert tokenize("a photo of a cat", context_length=4)[0].tolist() == [SOT, 320, 1125, EOT]
    assert tokenize("a photo", context_length=2)[0].tolist() == [SOT, EOT]


def test_cleaning_whitespace_html_and_case():
    assert np.array_equal(tokenize("  A\tPHOTO\n of&nbsp;a   cat "), tokenize("a photo of a cat"))
    assert np.array_equal(tokenize("&amp;lt;b&amp;gt;"), tokenize("<b>"))


def test_encode_decode_round_trip():
    tok = BPETokenizer()
    text = "a photo of a very small tabby cat sitting on the mat"
    assert tok.decode(tok.encode(text)).strip() == text
    assert tok.encode("a photo of a cat") == REFERENCE_IDS["a photo of a cat"][1:-1]
    assert tok.vocab_size == 49408


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["ok", 5], ("ok", None)])
def test_tokenize_rejects_non_strings(bad):
    with pytest.raises(TypeError, match="str"):
        tokenize(bad)


def test_type_error_names_the_bad_value():
    with pytest.raises(TypeError, match=r"item 1 is int: 1234"):
        tokenize(["fine", 1234])


@pytest.mark.parametrize("length", [0, 1, -5])
def test_context_length_too_small(length):
    with pytest.raises(ValueError, match="context_length"):
        tokenize("a cat", context_length=length)


def test_decode_rejects_unknown_ids():
    with pytest.raises(ValueError, match="49408"):
        BPETokenizer().decode([320, 49408])


def test_missing_vocab_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt.gz"):
        BPETokenizer(tmp_path / "nope.txt.gz")
    with pytest.raises(FileNotFoundError, match=VOCAB_FILENAME):
        CLIPTokenizer.from_pretrained(tmp_path)


def test_clip_tokenizer_call_shapes():
    tok = CLIPTokenizer()
    assert tok.vocab_size == 49408
    batch = tok(["a photo of a cat", "a dog"])["input_ids"]
    assert isinstance(batch, np.ndarray) and batch.shape == (2, 77) and batch.dtype == np.int32
    single = tok("a photo of a cat")["input_ids"]
    assert single == REFERENCE_IDS["a photo of a cat"] + [0] * 70
    assert tok("a photo of a cat", return_tensors="np")["input_ids"].shape == (1, 77)
    assert tok(["a cat", "a photo of a cat"], padding="longest")["input_ids"].shape == (2, 7)
    assert tok("cat " * 50, max_length=16, return_tensors="np")["input_ids"].shape == (1, 16)
    with pytest.raises(ValueError, match="padding"):
        tok("a cat", padding="bogus")


def test_clip_tokenizer_helpers():
    tok = CLIPTokenizer.from_pretrained("ViT-B-32")
    assert tok.tokenize("a photo of cats") == ["a</w>", "photo</w>", "of</w>", "cats</w>"]
    ids = tok.encode("a photo of a cat")
    assert ids == REFERENCE_IDS["a photo of a cat"]
    assert tok.encode("a photo of a cat", add_special_tokens=False) == ids[1:-1]
    assert tok.decode(ids) == "a photo of a cat"
    assert tok.decode(tok("a photo of a cat", return_tensors="np")["input_ids"]) == "a photo of a cat"
    with pytest.raises(TypeError, match="str"):
        tok.encode(42)


def test_from_pretrained_directory(tmp_path):
    shutil.copy(default_vocab_path(), tmp_path / VOCAB_FILENAME)
    tok = CLIPTokenizer.from_pretrained(tmp_path, context_length=32)
    assert tok.vocab_file == tmp_path / VOCAB_FILENAME
    assert tok("a photo of a cat", return_tensors="np")["input_ids"].shape == (1, 32)


def test_rejects_file_that_is_not_a_merge_table(tmp_path):
    bad = tmp_path / VOCAB_FILENAME
    with gzip.open(bad, "wt") as handle:
        handle.write("#version\nabc\n")
    with pytest.raises(ValueError, match="merge"):
        BPETokenizer(bad)


def reference_bpe(word, ranks):
    """The reference merge loop (open_clip ``SimpleTokenizer.bpe``), quadratic per word: the oracle."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        best = min(zip(parts, parts[1:]), key=lambda pair: ranks.get(pair, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(parts):
            if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return tuple(parts)


def random_words(seed, count, length, alphabet="abcdefghijklmnopqrstuvwxyz"):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        letters = rng.choice(list(alphabet), size=rng.integers(1, 5), replace=False)
        yield "".join(rng.choice(letters, size=rng.integers(1, length)))


def test_heap_bpe_equals_the_reference_merge_loop():
    tok = BPETokenizer()
    words = list(random_words(0, 1500, 60)) + ["a" * 301, "ab" * 150, "aab" * 100, "Ā" * 9, "ĠaĠa"]
    words += ["".join(tok.byte_encoder[b] for b in w.encode()) for w in ("猫猫猫", "naïve", "😀😀")]
    for word in words:
        assert tok.bpe(word) == reference_bpe(word, tok.merge_ranks), word


def test_huge_word_is_cut_before_bpe(monkeypatch):
    tok = BPETokenizer()
    assert tok.longest_symbol == 32 and tok.word_limit(75) == 4800
    word = "".join(np.random.default_rng(1).choice(list("abcdefghijklmnopqrstuvwxyz"), size=1_000_000))
    longest, original = [], BPETokenizer.bpe

    def bpe(self, piece):
        longest.append(len(piece))
        assert len(piece) <= 4800, f"bpe() got a {len(piece)}-character word"  # fail fast, not in minutes
        return original(self, piece)
    monkeypatch.setattr(BPETokenizer, "bpe", bpe)
    out = tok([word])
    assert max(longest) == 4800
    monkeypatch.undo()
    assert out[0, 1:76].tolist() == tok.encode(word[:6000])[:75]  # = the uncut BPE's first 75 tokens
    assert out[0, -1] == EOT


def test_only_the_tokens_kept_are_encoded(monkeypatch):
    tok = BPETokenizer()
    calls, original = [], BPETokenizer.bpe
    monkeypatch.setattr(BPETokenizer, "bpe", lambda self, piece: calls.append(piece) or original(self, piece))
    out = tok("a cat and a dog " * 100_000, context_length=10)
    assert out[0].tolist() == [SOT, 320, 2368, 537, 320, 1929, 320, 2368, 537, EOT] and len(calls) == 8
    assert tok.encode("a cat and a dog " * 3, max_tokens=4) == [320, 2368, 537, 320]
    assert len(tok.encode("a cat and a dog " * 3)) == 15


def test_word_limit_keeps_the_first_tokens_of_long_words():
    """The cut at word_limit(75) leaves the first 75 tokens of the uncut BPE unchanged."""
    tok = BPETokenizer()
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    words = [w * (6000 // len(w) + 1) for w in ("photograph", "abracadabra", "xyzzy", "aa")]
    words += ["".join(np.random.default_rng(s).choice(list(letters), size=5000, p=np.linspace(2, 0.1, 26) / 27.3))
              for s in range(4)]
    for word in words:
        full = tok.encode(word)
        assert tok.encode(word, max_tokens=75) == full[:75] and tok.encode(word, max_tokens=3) == full[:3]
        assert tok.bpe(word[:4800])[:75] == tuple(tok.decoder[i] for i in full[:75])

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

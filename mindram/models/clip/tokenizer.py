"""CLIP byte-level BPE tokenizer, output-identical to open_clip 3.3.0 ``SimpleTokenizer``/``tokenize``.

The merge table ``bpe_simple_vocab_16e6.txt.gz`` (OpenAI CLIP, MIT license, see ``NOTICE``) ships next
to this module and is shared by all CLIP models: 256 byte symbols, the same with the end-of-word
marker ``</w>``, 48,894 merges and the special tokens ``<start_of_text>``/``<end_of_text>`` (49,408 ids).
"""
import gzip
import heapq
import html
import logging
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple, Union

import ftfy
import numpy as np
import regex

from ...errors import ConfigError
from ...utils.env import env_number

logger = logging.getLogger(__name__)

VOCAB_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
DEFAULT_CONTEXT_LENGTH = 77
MAX_CONTEXT_LENGTH = 4096   # 16 KiB of ids per text; CLIP text towers have 77 positions (Long-CLIP: 248)
MAX_CONTEXT_LENGTH_ENV = "MINDRAM_MAX_CONTEXT_LENGTH"
SOT_TOKEN = "<start_of_text>"
EOT_TOKEN = "<end_of_text>"
_NUM_MERGES = 49152 - 256 - 2
_END_OF_WORD = "</w>"
_CACHE_LIMIT = 200_000
_CUT_MARGIN_SYMBOLS = 75  # see BPETokenizer.word_limit


def default_vocab_path() -> Path:
    """Path of the vocabulary file shipped inside the package."""
    return Path(__file__).resolve().parent / VOCAB_FILENAME


@lru_cache(maxsize=None)
def byte_to_unicode() -> Dict[int, str]:
    """Reversible map from the 256 byte values to printable, non-whitespace characters.

    Printable Latin-1 bytes map to themselves, the others (controls, space, NBSP, soft hyphen) in
    byte order to ``chr(256)``, ``chr(257)``, ...; dict order is the order of the first 256 ids.
    """
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in printable}
    for offset, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + offset)
    return table


def clean_text(text: str) -> str:
    """open_clip's ``'lower'`` cleaning: ``ftfy.fix_text``, ``html.unescape`` twice, strip,
    collapse whitespace runs to one space, and lowercase last."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


class BPETokenizer:
    """Core CLIP BPE tokenizer: text -> cleaned text -> pre-tokens -> BPE symbols -> ids."""

    def __init__(self, vocab_file: Union[str, Path, None] = None):
        path = Path(vocab_file) if vocab_file is not None else default_vocab_path()
        if not path.is_file():
            raise FileNotFoundError(f"CLIP BPE vocabulary file not found: {path}")
        logger.debug("loading CLIP BPE merges from %s", path)
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")
        # Line 0 is a version header; only the first _NUM_MERGES merges are used.
        merges = [tuple(line.split()) for line in lines[1:_NUM_MERGES + 1]]
        if len(merges) != _NUM_MERGES or any(len(m) != 2 for m in merges):
            raise ValueError(f"{path} is not a CLIP BPE merge file ({len(merges)} merges read)")
        self.byte_encoder = byte_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + _END_OF_WORD for s in symbols] + ["".join(m) for m in merges]
        vocab += [SOT_TOKEN, EOT_TOKEN]
        self.encoder = {token: index for index, token in enumerate(vocab)}
        self.decoder = {index: token for token, index in self.encoder.items()}
        self.merges = merges
        self.merge_ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.longest_symbol = max(len(token) for token in vocab)  # in byte symbols, "</w>" included
        self.sot_token_id = self.encoder[SOT_TOKEN]
        self.eot_token_id = self.encoder[EOT_TOKEN]
        self._reset_cache()
        self._pattern = regex.compile(
            rf"{SOT_TOKEN}|{EOT_TOKEN}|'s|'t|'re|'ve|'m|'ll|'d|\p{{L}}+|\p{{N}}|[^\s\p{{L}}\p{{N}}]+",
            regex.IGNORECASE,
        )

    @property
    def vocab_size(self) -> int:
        """Number of ids (49408 for the standard vocabulary)."""
        return len(self.encoder)

    def bpe(self, word: str) -> Tuple[str, ...]:
        """Split one byte-encoded pre-token into BPE symbols; the last symbol carries ``</w>``.

        Same result as the reference loop (repeatedly merge every non-overlapping occurrence, left to
        right, of the lowest-ranked adjacent pair), in O(n log n) instead of O(n * merges): the pairs
        wait in a heap keyed by ``(rank, position)``; all pending pairs of the lowest rank are merged
        left to right as one round (a pair whose left or right symbol changed meanwhile is stale and
        skipped), then the pairs the round created are pushed.
        """
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        result = self._merge(word)
        if len(self._cache) >= _CACHE_LIMIT:
            self._reset_cache()
        self._cache[word] = result  # returned from the local: another thread may reset the cache meanwhile
        return result

    def _merge(self, word: str) -> Tuple[str, ...]:
        ranks, merges = self.merge_ranks, self.merges
        symbols: List[Union[str, None]] = list(word[:-1]) + [word[-1] + _END_OF_WORD]
        following = list(range(1, len(symbols))) + [-1]  # a doubly linked list over the symbol slots
        preceding = list(range(-1, len(symbols) - 1))
        heap = [(ranks[pair], i) for i, pair in enumerate(zip(symbols, symbols[1:])) if pair in ranks]
        heapq.heapify(heap)
        while heap:
            rank = heap[0][0]
            left, right = merges[rank]
            merged_at = []
            while heap and heap[0][0] == rank:  # positions come out left to right
                i = heapq.heappop(heap)[1]
                j = following[i]
                if symbols[i] != left or j < 0 or symbols[j] != right:
                    continue  # stale: i was consumed or changed by an earlier merge
                symbols[i], symbols[j] = left + right, None
                following[i] = following[j]
                if following[j] >= 0:
                    preceding[following[j]] = i
                merged_at.append(i)
            for i in merged_at:
                for a, b in ((preceding[i], i), (i, following[i])):
                    pair_rank = ranks.get((symbols[a], symbols[b])) if a >= 0 and b >= 0 else None
                    if pair_rank is not None:
                        heapq.heappush(heap, (pair_rank, a))
        return tuple(s for s in symbols if s is not None)

    def word_limit(self, max_tokens: int) -> int:
        """Longest pre-token (in byte symbols) that :meth:`tokenize` passes to :meth:`bpe` when only the
        first ``max_tokens`` symbols are kept: ``(max_tokens + 75) * longest symbol`` (150 * 32 = 4800 for
        CLIP's 77-token context, 75 tokens between start and end); a longer word is cut to this length.

        Why the first ``max_tokens`` symbols stay the same: they span at most ``max_tokens * longest
        symbol`` characters, so the cut lies at least ``75 * 32 = 2400`` characters to their right. Cutting
        a word changes its BPE only from the cut leftwards (the last symbol gains ``</w>``, which changes
        the merges next to it), and one merge round carries a change at most one symbol further left.
        BPE bounds the number of such rounds only by the merge table, so the margin is a measured one: on
        this merge table the change never reached more than 17 characters back (random words of 400
        characters cut at random points), and tests/unit/test_tokenizer.py checks the cut against the
        uncut BPE. Without the cap a single n-character word costs O(n log n) BPE work for symbols that are
        thrown away (a 1,000,000-character word: ~10 s).
        """
        return (max_tokens + _CUT_MARGIN_SYMBOLS) * self.longest_symbol

    def _reset_cache(self) -> None:
        # Special tokens written literally in the input (after cleaning) map to their own ids.
        self._cache: Dict[str, Tuple[str, ...]] = {SOT_TOKEN: (SOT_TOKEN,), EOT_TOKEN: (EOT_TOKEN,)}

    def tokenize(self, text: str, max_tokens: Union[int, None] = None) -> List[str]:
        """Clean ``text`` and return its BPE symbols (strings such as ``'photo</w>'``).

        With ``max_tokens``, only the first ``max_tokens`` symbols are returned: words after them are not
        encoded, and a longer word is cut to :meth:`word_limit` characters before BPE, which keeps a huge
        single word fast without changing the symbols returned (see :meth:`word_limit`).
        """
        if not isinstance(text, str):
            raise TypeError(f"expected a str, got {type(text).__name__}: {text!r:.200}")
        limit = None if max_tokens is None else self.word_limit(max_tokens)
        symbols: List[str] = []
        for piece in self._pattern.findall(clean_text(text)):
            if max_tokens is not None and len(symbols) >= max_tokens:
                break
            encoded = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            symbols.extend(self.bpe(encoded[:limit]))
        return symbols[:max_tokens]

    def encode(self, text: str, max_tokens: Union[int, None] = None) -> List[int]:
        """Token ids of ``text`` without start/end tokens (the first ``max_tokens``, see :meth:`tokenize`)."""
        return [self.encoder[symbol] for symbol in self.tokenize(text, max_tokens)]

    def decode(self, ids: Iterable[int]) -> str:
        """Inverse of :meth:`encode` up to cleaning; ``</w>`` becomes a space (as in open_clip)."""
        try:
            text = "".join(self.decoder[int(i)] for i in ids)
        except KeyError as err:
            raise ValueError(f"token id {err.args[0]} is outside the vocabulary "
                             f"[0, {self.vocab_size})") from None
        raw = bytearray(self.byte_decoder[c] for c in text)
        return raw.decode("utf-8", errors="replace").replace(_END_OF_WORD, " ")

    def pack(self, sequences: Sequence[List[int]], context_length: int) -> np.ndarray:
        """Zero-padded int32 ``(N, context_length)`` rows ``[sot, *ids, eot]``, cut to fit (eot kept last)."""
        out = np.zeros((len(sequences), context_length), dtype=np.int32)
        for row, ids in enumerate(sequences):
            ids = [self.sot_token_id, *ids[:context_length - 2], self.eot_token_id]
            out[row, :len(ids)] = ids
        return out

    def __call__(self, texts: Union[str, Sequence[str]],
                 context_length: int = DEFAULT_CONTEXT_LENGTH) -> np.ndarray:
        """Same as :func:`tokenize` with this tokenizer."""
        texts = _as_text_list(texts)
        context_length = _check_context_length(context_length)
        return self.pack([self.encode(t, context_length - 2) for t in texts], context_length)


def _as_text_list(texts) -> List[str]:
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"expected a str or a list of str, got {type(texts).__name__}: {texts!r:.200}")
    for index, item in enumerate(texts):
        if not isinstance(item, str):
            raise TypeError(f"expected a str or a list of str, but item {index} is "
                            f"{type(item).__name__}: {item!r:.200}")
    return list(texts)


def max_context_length() -> int:
    """The largest ``context_length`` accepted: ``$MINDRAM_MAX_CONTEXT_LENGTH``, default 4096."""
    return env_number(MAX_CONTEXT_LENGTH_ENV, MAX_CONTEXT_LENGTH, smallest=2, meaning="tokens")


def _check_context_length(context_length) -> int:
    """``context_length`` as an int in [2, :func:`max_context_length`]; ConfigError (a ValueError) otherwise. The
    bound keeps ``(N, context_length)`` int32 output and the per-word BPE work (:meth:`BPETokenizer.word_limit`)
    small: ``tokenize("a", 10**9)`` would allocate 3.7 GiB."""
    if isinstance(context_length, (bool, np.bool_)) or not isinstance(context_length, (int, np.integer)):
        raise ConfigError(f"context_length must be an int, got {type(context_length).__name__}: "
                          f"{context_length!r:.100}")
    if context_length < 2:
        raise ConfigError(f"context_length must be >= 2 (room for start and end tokens), got {context_length}")
    limit = max_context_length()
    if context_length > limit:
        raise ConfigError(f"context_length {context_length} is over the limit of {limit} tokens "
                          f"(set ${MAX_CONTEXT_LENGTH_ENV} to raise it)")
    return int(context_length)


@lru_cache(maxsize=1)
def _default_tokenizer() -> BPETokenizer:
    return BPETokenizer()


def tokenize(texts: Union[str, Sequence[str]], context_length: int = DEFAULT_CONTEXT_LENGTH) -> np.ndarray:
    """Tokenize text(s) exactly like ``open_clip.tokenize``, returning int32 ids of shape (N, context_length).

    Each row is ``[49406, *ids, 49407]`` zero-padded; a row that is too long is truncated and its
    last position set to 49407. A single ``str`` gives N = 1.
    """
    return _default_tokenizer()(texts, context_length)


class CLIPTokenizer:
    """MindFormers-style wrapper around :class:`BPETokenizer`.

    ``tok(text)`` returns ``{"input_ids": ...}``. For a list of strings ``input_ids`` is an int32
    ``np.ndarray`` of shape ``(N, L)``; for a single string it is a ``list[int]`` of length ``L``
    when ``return_tensors`` is None, and a ``(1, L)`` array/tensor otherwise. ``L`` is
    ``max_length`` (default ``context_length``) with ``padding="max_length"``, the longest row
    (capped at that value) with ``padding="longest"``. Padding uses id 0 as in open_clip.
    ``return_tensors="np"`` gives numpy, ``"ms"`` a ``mindspore.Tensor`` (int32).
    """

    def __init__(self, vocab_file: Union[str, Path, None] = None,
                 context_length: int = DEFAULT_CONTEXT_LENGTH):
        self.context_length = _check_context_length(context_length)
        self.vocab_file = Path(vocab_file) if vocab_file is not None else default_vocab_path()
        self.core = BPETokenizer(self.vocab_file)
        self.sot_token_id = self.core.sot_token_id
        self.eot_token_id = self.core.eot_token_id

    @classmethod
    def from_pretrained(cls, name_or_path: Union[str, Path], **kwargs) -> "CLIPTokenizer":
        """Build from a model name (all CLIP models share one vocabulary), a directory holding
        ``bpe_simple_vocab_16e6.txt.gz``, or the path of a vocabulary file."""
        path = Path(name_or_path)
        if path.is_dir():
            vocab = path / VOCAB_FILENAME
            if not vocab.is_file():
                raise FileNotFoundError(f"CLIP BPE vocabulary file not found: {vocab}")
            return cls(vocab, **kwargs)
        if path.is_file():
            return cls(path, **kwargs)
        logger.debug("'%s' is not a local path; using the packaged CLIP vocabulary", name_or_path)
        return cls(None, **kwargs)

    @property
    def vocab_size(self) -> int:
        """Number of ids (49408)."""
        return self.core.vocab_size

    def tokenize(self, text: str) -> List[str]:
        """BPE symbols of ``text`` (strings ending in ``</w>`` at word ends)."""
        return self.core.tokenize(text)

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        """Ids of ``text``; wrapped in start/end ids when ``add_special_tokens`` (no truncation)."""
        ids = self.core.encode(text)
        return [self.sot_token_id, *ids, self.eot_token_id] if add_special_tokens else ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` with surrounding spaces stripped. With ``skip_special_tokens`` the start
        id is dropped and decoding stops at the first end id (what follows it is padding)."""
        if hasattr(ids, "asnumpy"):  # mindspore.Tensor
            ids = ids.asnumpy()
        ids = [int(i) for i in np.ravel(ids if hasattr(ids, "__len__") else list(ids))]
        if skip_special_tokens:
            if self.eot_token_id in ids:
                ids = ids[:ids.index(self.eot_token_id)]
            ids = [i for i in ids if i != self.sot_token_id]
        return self.core.decode(ids).strip()

    def __call__(self, text: Union[str, Sequence[str]], padding: Union[str, bool] = "max_length",
                 max_length: Union[int, None] = None, return_tensors: Union[str, None] = None) -> dict:
        """Tokenize ``text`` into ``{"input_ids": ...}``; see the class docstring for shapes."""
        texts = _as_text_list(text)
        length = _check_context_length(self.context_length if max_length is None else max_length)
        if return_tensors not in (None, "np", "ms"):
            raise ValueError(f"return_tensors must be None, 'np' or 'ms', got {return_tensors!r}")
        encoded = [self.core.encode(t, length - 2) for t in texts]
        if padding == "max_length":
            width = length
        elif padding is True or padding == "longest":
            width = min(length, max((len(ids) + 2 for ids in encoded), default=2))
        else:
            raise ValueError(f"padding must be 'max_length', 'longest' or True, got {padding!r}")
        ids = self.core.pack(encoded, width)
        if isinstance(text, str) and return_tensors is None:
            return {"input_ids": ids[0].tolist()}
        if return_tensors == "ms":
            import mindspore  # pylint: disable=import-outside-toplevel

            return {"input_ids": mindspore.Tensor(ids, mindspore.int32)}
        return {"input_ids": ids}

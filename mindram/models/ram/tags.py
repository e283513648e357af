"""Tag vocabularies, per-tag thresholds and the reference's tag selection (docs/ram.md#tag-selection).

- Lists are read like the reference: ``read().splitlines()``, no stripping (2579 Chinese names end
  in a space and keep it) — :func:`read_tag_list`, the package's one reader (``mindram/utils/tag_lists.py``).
- Thresholds: every tag starts at the default, then entry k of the threshold file overrides tag k.
- A tag is output when its sigmoid score is STRICTLY greater than its threshold (a 1.0 threshold
  never fires), then the ``delete_tag_index`` columns are cleared; names are joined with ' | ' in
  tag-index order; an image without tags gives ''.
- Thresholds are probabilities: every value that enters (argument, file entry) is checked to be a
  number in [0, 1] (NaN refused) where it enters.
- Open-set tag names: a list of non-empty, distinct strings, or one string holding a comma-separated
  list (``"cat, dog"`` → ``["cat", "dog"]``; each name stripped).
"""
import dataclasses
from collections.abc import Iterable, Mapping, Set
from typing import Any, Optional

import numpy as np

from ...errors import ConfigError, DataError
from ...utils.tag_lists import read_tag_list
from ...utils.validation import check_threshold

SEPARATOR = " | "


def parse_tag_names(names, name="open_set_tags"):
    """Open-set tag names as a list: a string is a comma-separated list; names must be non-empty and distinct."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    elif isinstance(names, Iterable) and not isinstance(names, (bytes, Mapping, Set)):  # ordered collections
        names = list(names)
    else:
        raise DataError(f"{name}: expected a non-empty list of tag names or a comma-separated string, "
                        f"got {type(names).__name__}")
    if not names:
        raise DataError(f"{name}: expected a non-empty list of tag names, got none")
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise DataError(f"{name}: tag names must be non-empty strings, got {bad[:5]!r}")
    seen, duplicates = set(), []
    for n in names:
        if n in seen and n not in duplicates:
            duplicates.append(n)
        seen.add(n)
    if duplicates:
        raise DataError(f"{name}: duplicate tag name(s) {duplicates[:10]!r}; give each tag once")
    return names


def read_thresholds(path, num_tags, default):
    """float32 (num_tags,) thresholds: ``default`` overridden entry by entry by the file (if any)."""
    thresholds = np.full(num_tags, check_threshold(default, "default threshold"), dtype=np.float32)
    if path is None:
        return thresholds
    try:
        lines = read_tag_list(path)
    except FileNotFoundError as e:
        raise ConfigError(f"threshold file not found: {path}") from e
    values = []
    for lineno, line in enumerate(lines, 1):
        try:
            value = float(line.strip())
        except ValueError as e:
            raise ConfigError(f"{path}:{lineno}: expected a number, got {line!r}") from e
        values.append(check_threshold(value, f"{path}:{lineno}"))
    if len(values) > num_tags:
        raise ConfigError(f"{path}: {len(values)} thresholds for {num_tags} tags")
    thresholds[:len(values)] = values
    return thresholds


def resolve_thresholds(threshold, default, num_tags):
    """Thresholds to use: ``default`` (per tag) when ``threshold`` is None, else one value or a (num_tags,) array."""
    if threshold is None:
        return default
    if np.ndim(threshold) == 0:
        return np.full(num_tags, check_threshold(threshold), dtype=np.float32)
    values = np.asarray(threshold, dtype=np.float32)
    if values.shape != (num_tags,):
        raise DataError(f"threshold: expected a number or {num_tags} values (one per tag), got shape {values.shape}")
    bad = np.flatnonzero(~((values >= 0.0) & (values <= 1.0)))  # NaN fails both comparisons
    if bad.size:
        raise ConfigError(f"threshold: per-tag values must be in [0, 1], got {values[bad[0]]!r} for tag {bad[0]}")
    return values


def select_tags(scores, thresholds, delete_tag_index=()):
    """For each row of (N, K) ``scores``: ascending indices with score > threshold, minus ``delete_tag_index``."""
    hits = np.asarray(scores) > np.asarray(thresholds, dtype=np.float32)[None, :]
    if len(delete_tag_index):
        hits[:, list(delete_tag_index)] = False
    return [np.flatnonzero(row) for row in hits]


def join_tags(names, indices):
    """' | '-joined names of ``indices`` ('' when empty)."""
    return SEPARATOR.join(names[i] for i in indices)


@dataclasses.dataclass(frozen=True, eq=False)
class Vocabulary:
    """What a model tags with: names, per-tag thresholds, the label embeddings (None: the checkpoint's) and the
    tag indices never output. A value, independent of the model it came from (see ``RAMBase.vocabulary``)."""

    names: list
    names_chinese: list
    thresholds: np.ndarray
    label_embed: Optional[Any] = None
    delete_tag_index: tuple = ()

    def select(self, scores, threshold=None):
        """Per image: ascending tag indices with score > threshold (default: per tag), minus delete_tag_index."""
        return select_tags(scores, resolve_thresholds(threshold, self.thresholds, len(self.names)),
                           self.delete_tag_index)

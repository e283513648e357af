"""Tag vocabularies, per-tag thresholds and the reference's tag selection (spec §8.1 steps 9–10, §8.3).

- Lists are read like the reference: ``read().splitlines()``, no stripping (2579 Chinese names end
  in a space and keep it).
- Thresholds: every tag starts at the default, then entry k of the threshold file overrides tag k.
- A tag is output when its sigmoid score is STRICTLY greater than its threshold (a 1.0 threshold
  never fires), then the ``delete_tag_index`` columns are cleared; names are joined with ' | ' in
  tag-index order; an image without tags gives ''.
"""
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError

SEPARATOR = " | "


def read_tag_list(path):
    """Lines of a tag file, unstripped."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"tag list not found: {path}")
    return path.read_text(encoding="utf-8").splitlines()


def read_thresholds(path, num_tags, default):
    """float32 (num_tags,) thresholds: ``default`` overridden entry by entry by the file (if any)."""
    thresholds = np.full(num_tags, default, dtype=np.float32)
    if path is None:
        return thresholds
    values = []
    for lineno, line in enumerate(read_tag_list(path), 1):
        try:
            values.append(float(line.strip()))
        except ValueError as e:
            raise ConfigError(f"{path}:{lineno}: expected a number, got {line!r}") from e
    if len(values) > num_tags:
        raise ConfigError(f"{path}: {len(values)} thresholds for {num_tags} tags")
    thresholds[:len(values)] = values
    return thresholds


def resolve_thresholds(threshold, default, num_tags):
    """Thresholds to use: ``default`` (per tag) when ``threshold`` is None, else one value or a (num_tags,) array."""
    if threshold is None:
        return default
    values = np.asarray(threshold, dtype=np.float32)
    if values.ndim == 0:
        return np.full(num_tags, values, dtype=np.float32)
    if values.shape != (num_tags,):
        raise DataError(f"threshold: expected a number or {num_tags} values (one per tag), got shape {values.shape}")
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

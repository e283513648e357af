"""Common record model of every dataset source, plus the bad-item bookkeeping shared with the pipeline.

A *source* is a random-access sequence of :class:`Record` ``(image, caption, label)``:

* ``image``: a file path (decoded later, in the pipeline workers), a ``PIL.Image.Image`` or a uint8
  ``(H, W, 3)`` numpy array;
* ``caption``: one string (training style: one record per (image, caption) pair) or a list of strings
  (evaluation style: one record per image with all its captions);
* ``label``: the class index for classification sources, ``-1`` for caption-only sources.

Sources only parse annotations; decoding happens in :func:`mindram.data.build_clip_dataset`.
"""
import logging
import os
import threading
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Union

import numpy as np
from PIL import Image

from ..errors import ConfigError, DataError

logger = logging.getLogger(__name__)

__all__ = ["Record", "RecordSource", "DataStats", "IMAGE_EXTENSIONS"]

ImageRef = Union[str, os.PathLike, Image.Image, np.ndarray]
Caption = Union[str, List[str]]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class Record(NamedTuple):
    """One dataset item: ``image`` (path, PIL image or uint8 HWC array), ``caption`` (str or list of str),
    ``label`` (class index, ``-1`` when the source has no classes)."""

    image: ImageRef
    caption: Caption
    label: int = -1


class PicklableLock:
    """Mixin for objects holding ``self._lock``: pickled without it (locks cannot be pickled; workers with
    python_multiprocessing get their own)."""

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


class DataStats(PicklableLock):
    """Thread-safe counters of the items the pipeline could not read.

    Attributes:
        bad_items: ``{index: "path: reason"}`` of every record whose image failed to load (each is logged once).
        num_substituted: how many times a bad item was replaced by the next valid one (over all epochs).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.bad_items: Dict[int, str] = {}
        self.num_substituted = 0

    def is_bad(self, index: int) -> bool:
        """Whether ``index`` is already known to be unreadable."""
        return index in self.bad_items

    def mark_bad(self, index: int, message: str, outcome: str = "it is replaced by the next valid item") -> None:
        """Record an unreadable item; the first time an index is seen, log one warning for it (with ``outcome``:
        what the pipeline does instead)."""
        with self._lock:
            new = index not in self.bad_items
            self.bad_items[index] = message
        if new:
            logger.warning("skipping unreadable item %d (%s); %s", index, message, outcome)

    def add_substitution(self) -> None:
        with self._lock:
            self.num_substituted += 1

    @property
    def num_bad(self) -> int:
        """Number of distinct unreadable items found so far."""
        return len(self.bad_items)

    def summary(self) -> str:
        return (f"{self.num_bad} unreadable item(s) found so far, {self.num_substituted} sample(s) replaced by "
                "the next valid item")

    def reset(self) -> None:
        with self._lock:
            self.bad_items.clear()
            self.num_substituted = 0


class RecordSource:
    """Base class of dataset sources: ``len(source)``, ``source[i] -> Record``.

    Subclasses fill ``self._items`` with ``(image, caption, label)`` tuples (or override ``__getitem__``/
    ``__len__``) and set ``class_names`` when the source is a classification set.
    """

    #: class names (label ``i`` is ``class_names[i]``) or None for caption-only sources.
    class_names: Optional[List[str]] = None
    split: str = "train"

    def __init__(self):
        self._items: List[tuple] = []
        self.stats = DataStats()

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Record:
        return Record(*self._items[index])

    @property
    def has_labels(self) -> bool:
        """True for classification sources (the pipeline then adds a ``label`` column)."""
        return self.class_names is not None

    @property
    def bad_items(self) -> Dict[int, str]:
        """``{index: "path: reason"}`` of the items the pipeline skipped (see :class:`DataStats`)."""
        return self.stats.bad_items

    def check_images_exist(self, root: Union[str, os.PathLike]) -> None:
        """DataError when not one record's image file exists (a wrong ``root`` or images not extracted yet).

        Stops at the first existing file, so a usable dataset costs one ``stat``; single missing files are
        left to the pipeline (skipped, logged and counted there)."""
        paths = [item[0] for item in self._items]
        if paths and not any(os.path.isfile(p) for p in paths):
            raise DataError(f"{type(self).__name__}: none of the {len(paths)} image files exists (e.g. {paths[0]}); "
                            f"expected the images under {root}: check the dataset directory / root")

    def max_captions(self) -> int:
        """0 when every record has a single caption string, else the largest caption-list length.

        Reads annotations only (no image is decoded); sources without ``_items`` override it."""
        best = 0
        for item in self._items:
            if not isinstance(item[1], str):
                best = max(best, len(item[1]))
        return best

    def __repr__(self) -> str:
        extra = f", num_classes={len(self.class_names)}" if self.class_names is not None else ""
        return f"{type(self).__name__}(split={self.split!r}, num_records={len(self)}{extra})"


def check_split(split: str, allowed: Sequence[str], aliases: Optional[Dict[str, str]] = None) -> str:
    """Normalise a split name (``aliases`` maps e.g. 'val' -> 'dev'); unknown names raise ConfigError."""
    split = (aliases or {}).get(split, split)
    if split not in allowed:
        raise ConfigError(f"unknown split {split!r}; expected one of {list(allowed)}")
    return split


def first_existing_dir(root: Path, candidates: Sequence[str], what: str) -> Path:
    """The first ``root / candidate`` that is a directory; DataError listing every place looked at otherwise."""
    for cand in candidates:
        path = root / cand if cand else root
        if path.is_dir():
            return path
    tried = ", ".join(str(root / c) if c else str(root) for c in candidates)
    raise DataError(f"cannot find the {what} directory; looked for: {tried}")


def find_annotation_file(root: Path, given: Optional[Union[str, os.PathLike]], patterns: Sequence[str],
                         what: str) -> Path:
    """The annotation file of a dataset: ``given`` as is or relative to ``root``; by default the one file in
    ``root`` matching the first pattern that matches any. DataError naming every place looked at otherwise."""
    if given not in (None, ""):
        path = Path(given)
        if not path.exists() and not path.is_absolute():
            if not (root / path).exists():
                raise DataError(f"{what} not found: looked for {path} and {root / path}")
            path = root / path
        return existing_file(path, what)
    if not root.is_dir():
        raise DataError(f"dataset directory not found: {root} (expected the directory holding the {what})")
    for pattern in patterns:
        found = sorted(p for p in root.glob(pattern) if p.is_file())
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DataError(f"several {what}s in {root} ({[p.name for p in found]}); name one with annotation_file")
    raise DataError(f"no {what} in {root} (expected a file matching {list(patterns)}); set annotation_file")


def existing_file(path: Union[str, os.PathLike], what: str) -> Path:
    """``Path(path)`` if it is a file, else a DataError naming it."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{what} {path} is a directory; expected the file itself")
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    return path

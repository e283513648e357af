"""CIFAR-100, python version (``cifar-100-python/{train,test,meta}``), read with a restricted unpickler.

Official layout: each split file is a pickled dict (written by Python 2) with ``data`` — a uint8 numpy array
(N, 3072) holding three 32x32 planes (R, G, B) per row — and ``fine_labels`` (list of ints); ``meta`` holds
``fine_label_names``. Keys may be str or bytes depending on how the file was written; both are accepted.
"""
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np

from ..errors import DataError
from .base import Record, RecordSource, check_split, first_existing_dir
from ..utils.safe_pickle import load_restricted_pickle

logger = logging.getLogger(__name__)

__all__ = ["Cifar100"]

_SIDE = 32
#: the official ``fine_label_names`` of CIFAR-100 (label order), for prediction without the dataset files
OFFICIAL_NAMES_FILE = Path(__file__).resolve().parent / "class_names" / "cifar100_fine_label_names.txt"


def _str_keys(obj: Any, path: Path) -> Dict[str, Any]:
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class Cifar100(RecordSource):
    """CIFAR-100 (fine labels) as a classification source.

    Args:
        root: ``cifar-100-python/`` itself or its parent directory.
        split: "train" or "test".
        caption_template: caption of every record, formatted with the class name (CLIP-style prompt).

    Records: ``(uint8 (32, 32, 3) array, "a photo of a <class>.", fine label)``. ``class_names`` are the
    official ``fine_label_names`` with ``_`` replaced by a space (``"maple tree"``).
    """

    def __init__(self, root: Union[str, os.PathLike], split: str = "train",
                 caption_template: str = "a photo of a {}."):
        super().__init__()
        self.split = check_split(split, ("train", "test"))
        self.root = first_existing_dir(Path(root), ("cifar-100-python", ""), "CIFAR-100 python")
        for name in (self.split, "meta"):
            if not (self.root / name).is_file():
                raise DataError(f"CIFAR-100 file {self.root / name} not found (expected the python-version "
                                "files 'train', 'test' and 'meta')")
        self.class_names: List[str] = self._meta_class_names(self.root)
        self.caption_template = caption_template
        self.data, self.labels = self._load_split(self.root / self.split)
        logger.info("CIFAR-100 %s: %d images, %d classes", self.split, len(self.labels), len(self.class_names))

    @staticmethod
    def _meta_class_names(root: Path) -> List[str]:
        meta = _str_keys(load_restricted_pickle(root / "meta"), root / "meta")
        if "fine_label_names" not in meta:
            raise DataError(f"{root / 'meta'}: no 'fine_label_names' key (found {sorted(meta)})")
        return [_text(n).replace("_", " ") for n in meta["fine_label_names"]]

    @classmethod
    def read_class_names(cls, root: Union[str, os.PathLike, None] = None, **_) -> List[str]:
        """The class names without reading any image: from ``root``'s ``meta`` file when ``root`` is given,
        else CIFAR-100's official 100 fine label names shipped with mindram (same order, ``_`` as a space)."""
        if root in (None, ""):
            return [n.replace("_", " ") for n in OFFICIAL_NAMES_FILE.read_text(encoding="utf-8").split()]
        root = first_existing_dir(Path(root), ("cifar-100-python", ""), "CIFAR-100 python")
        if not (root / "meta").is_file():
            raise DataError(f"CIFAR-100 file {root / 'meta'} not found (it holds the class names)")
        return cls._meta_class_names(root)

    def _load_split(self, path: Path):
        d = _str_keys(load_restricted_pickle(path), path)
        missing = [k for k in ("data", "fine_labels") if k not in d]
        if missing:
            raise DataError(f"{path}: missing key(s) {missing} (found {sorted(d)})")
        data = d["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
                or data.shape[1] != 3 * _SIDE * _SIDE:
            got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got {got}")
        if data.shape[0] == 0:
            raise DataError(f"{path}: no images ('data' has 0 rows; expected the official {self.split} split)")
        labels = np.asarray(d["fine_labels"], dtype=np.int64)
        if labels.shape != (data.shape[0],):
            raise DataError(f"{path}: {labels.shape[0]} fine_labels for {data.shape[0]} images")
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise DataError(f"{path}: fine_labels outside [0, {len(self.class_names)})")
        return data, labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> Record:
        hwc = np.ascontiguousarray(self.data[index].reshape(3, _SIDE, _SIDE).transpose(1, 2, 0))
        label = int(self.labels[index])
        return Record(hwc, self.caption_template.format(self.class_names[label]), label)

    def max_captions(self) -> int:
        return 0

"""COCO (or Flickr30k) Karpathy-split annotations in the BLIP / PaddleMIX json format.

``coco_karpathy_train.json``: ``[{"image": "val2014/x.jpg", "caption": "a dog ...", "image_id": "coco_1"}, ...]``
``coco_karpathy_{val,test}.json``: ``[{"image": "val2014/x.jpg", "caption": ["...", "...", ...]}, ...]``
Image paths are relative to ``root``.
"""
import json
import logging
import os
from pathlib import Path
from typing import Optional, Union

from tqdm import tqdm

from ..errors import DataError
from .base import RecordSource, check_split, find_annotation_file

logger = logging.getLogger(__name__)

__all__ = ["CocoKarpathy"]


class CocoKarpathy(RecordSource):
    """Karpathy-split caption json.

    Args:
        root: directory the ``image`` paths are relative to.
        annotation_file: the json file (absolute, relative to the working directory, or relative to ``root``);
            default: ``coco_karpathy_<split>.json`` in ``root`` (else the one ``*_<split>.json`` there).
        split: "train", "val" or "test" (only decides the default of ``per_caption``).
        per_caption: one record per (image, caption) — lists are expanded — or one record per json entry
            (a string caption then stays a string). Default: True for "train", False otherwise.
    """

    def __init__(self, root: Union[str, os.PathLike], annotation_file: Optional[Union[str, os.PathLike]] = None,
                 split: str = "train", per_caption: Optional[bool] = None):
        super().__init__()
        self.root = Path(root)
        self.split = check_split(split, ("train", "val", "test"), {"dev": "val"})
        self.per_caption = self.split == "train" if per_caption is None else bool(per_caption)
        ann = find_annotation_file(self.root, annotation_file,
                                   (f"coco_karpathy_{self.split}.json", f"*_{self.split}.json"),
                                   "Karpathy annotation json")
        try:
            entries = json.loads(ann.read_text(encoding="utf-8"))
        except ValueError as e:
            raise DataError(f"{ann}: not valid JSON ({e})") from e
        if not isinstance(entries, list):
            raise DataError(f"{ann}: expected a JSON list of entries, got {type(entries).__name__}")
        for i, entry in enumerate(tqdm(entries, desc="karpathy json", disable=len(entries) < 100_000)):
            if not isinstance(entry, dict) or "image" not in entry or "caption" not in entry:
                raise DataError(f"{ann}: entry {i} must be an object with 'image' and 'caption', got {entry!r:.120}")
            caption = entry["caption"]
            if isinstance(caption, str):
                captions = [caption]
            elif isinstance(caption, list) and caption and all(isinstance(c, str) for c in caption):
                captions = list(caption)
            else:
                raise DataError(f"{ann}: entry {i} 'caption' must be a string or a non-empty list of strings")
            path = str(self.root / entry["image"])
            if self.per_caption:
                self._items.extend((path, c, -1) for c in captions)
            else:
                self._items.append((path, caption if isinstance(caption, str) else captions, -1))
        if not self._items:
            raise DataError(f"{ann}: no entries (expected a list of {{'image', 'caption'}} objects)")
        self.check_images_exist(self.root)
        logger.info("Karpathy %s (%s): %d entries, %d records", self.split, ann.name, len(entries), len(self))

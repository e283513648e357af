"""Flickr8k captions (``Flickr8k_text/`` + ``Flickr8k_Dataset/``).

Layout::

    root/Flickr8k_text/Flickr8k.token.txt          <image>.jpg#<k>\\t<caption>   (5 captions per image)
    root/Flickr8k_text/Flickr8k.{train,dev,test}Images.txt    one image name per line
    root/Flickr8k_Dataset/Flickr8k_Dataset/*.jpg   (also accepted: Flickr8k_Dataset/, and the official zip's
                                                    misspelt Flicker8k_Dataset/ at either level)

The text files may also sit directly in ``root``.
"""
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Union

from tqdm import tqdm

from ..errors import DataError
from .base import RecordSource, check_split, existing_file, first_existing_dir

logger = logging.getLogger(__name__)

__all__ = ["Flickr8k"]

_IMAGE_DIRS = ("Flickr8k_Dataset/Flickr8k_Dataset", "Flickr8k_Dataset/Flicker8k_Dataset", "Flickr8k_Dataset",
               "Flicker8k_Dataset")
_SPLIT_FILES = {"train": "Flickr8k.trainImages.txt", "dev": "Flickr8k.devImages.txt",
                "test": "Flickr8k.testImages.txt"}


def parse_token_file(path: Path) -> Dict[str, List[str]]:
    """``{image name: [caption_0, caption_1, ...]}`` ordered by the ``#k`` suffix."""
    by_image: Dict[str, Dict[int, str]] = defaultdict(dict)
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for lineno, line in enumerate(tqdm(lines, desc="Flickr8k captions", disable=len(lines) < 100_000), 1):
        if not line.strip():
            continue
        key, sep, caption = line.partition("\t")
        name, hash_, k = key.rpartition("#")
        if not sep or not hash_ or not k.strip().isdigit():
            raise DataError(f"{path}:{lineno}: expected '<image>.jpg#<k>\\t<caption>', got {line[:80]!r}")
        by_image[name.strip()][int(k)] = caption.strip()
    return {name: [caps[k] for k in sorted(caps)] for name, caps in by_image.items()}


class Flickr8k(RecordSource):
    """Flickr8k image-caption pairs.

    Args:
        root: dataset root (see module docstring for the accepted layouts).
        split: "train", "dev" (alias "val") or "test".
        per_caption: one record per (image, caption) pair — training style — or one record per image with its
            list of captions (evaluation style). Default: True for "train", False otherwise.

    Images listed in the split file but without captions are skipped with a warning; token-file entries that
    are not in the split (the official file has a few ``*.jpg.1`` names) are ignored.
    """

    def __init__(self, root: Union[str, os.PathLike], split: str = "train", per_caption: Optional[bool] = None):
        super().__init__()
        root = Path(root)
        self.split = check_split(split, tuple(_SPLIT_FILES), {"val": "dev"})
        self.per_caption = self.split == "train" if per_caption is None else bool(per_caption)
        text_dir = first_existing_dir(root, ("Flickr8k_text", ""), "Flickr8k text")
        self.image_dir = first_existing_dir(root, _IMAGE_DIRS, "Flickr8k image")
        captions = parse_token_file(existing_file(text_dir / "Flickr8k.token.txt", "Flickr8k token file"))
        split_file = existing_file(text_dir / _SPLIT_FILES[self.split], "Flickr8k split list")
        names = [ln.strip() for ln in split_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
        no_caption = [n for n in names if n not in captions]
        if no_caption:
            logger.warning("%d image(s) of %s have no caption in the token file and are skipped (first: %s)",
                           len(no_caption), split_file.name, no_caption[0])
        for name in names:
            caps = captions.get(name)
            if not caps:
                continue
            path = str(self.image_dir / name)
            if self.per_caption:
                self._items.extend((path, c, -1) for c in caps)
            else:
                self._items.append((path, list(caps), -1))
        if not self._items:
            raise DataError(f"Flickr8k {self.split} split is empty ({split_file} lists {len(names)} image(s) with "
                            f"captions in the token file)")
        self.check_images_exist(self.image_dir)
        logger.info("Flickr8k %s: %d images, %d records", self.split, len(names) - len(no_caption), len(self))

"""Image-caption tables in open_clip's csv convention (``--csv-img-key filepath --csv-caption-key title``)."""
import csv
import logging
import os
from pathlib import Path
from typing import Optional, Union

from ..errors import DataError
from .base import RecordSource, existing_file

logger = logging.getLogger(__name__)

__all__ = ["CaptionTable"]


class CaptionTable(RecordSource):
    """CSV / TSV file with a header row and one (image path, caption) per row.

    Args:
        path: the table file.
        root: directory relative image paths are joined to; default: the table's own directory (open_clip
            opens them relative to the working directory, which makes a table depend on where it is run).
        image_key, caption_key: header names of the two columns (open_clip defaults ``filepath``, ``title``).
        sep: column separator; default: tab for ``.tsv``/``.tab``/``.txt`` files, comma otherwise.
    """

    def __init__(self, path: Union[str, os.PathLike], root: Optional[Union[str, os.PathLike]] = None,
                 image_key: str = "filepath", caption_key: str = "title", sep: Optional[str] = None):
        super().__init__()
        self.path = existing_file(path, "caption table")
        self.root = Path(root) if root is not None else self.path.parent
        if sep is None:
            sep = "\t" if self.path.suffix.lower() in (".tsv", ".tab", ".txt") else ","
        self.sep = sep
        with open(self.path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter=sep)
            header = reader.fieldnames or []
            missing = [k for k in (image_key, caption_key) if k not in header]
            if missing:
                raise DataError(f"{self.path}: column(s) {missing} not in the header {header} "
                                f"(separator {sep!r}; set image_key/caption_key/sep)")
            for row in reader:
                image, caption = (row.get(image_key) or "").strip(), row.get(caption_key)
                if not image or caption is None:
                    raise DataError(f"{self.path}:{reader.line_num}: empty image path or missing caption")
                self._items.append((str(self.root / image), caption, -1))
        if not self._items:
            raise DataError(f"{self.path}: the table has a header but no rows")
        self.check_images_exist(self.root)
        logger.info("caption table %s: %d records", self.path.name, len(self))

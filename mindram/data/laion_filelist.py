"""PaddleMIX's LAION format (``--task_name laion.filelist``), streamed like webdataset shards.

``laion.filelist`` lists part files, one path per line (``laiondata-pathdir/part-00000``; a relative path is
taken as given when it exists from the working directory, else relative to the list's folder). A part file —
plain or ``.gz`` — holds one sample per line, tab-separated: column 2 a JSON object whose ``caption_en`` (else
``blip_caption_en``, else an empty caption, as PaddleMIX reads it) is the caption, column 5 the image in base64.
A line that is not UTF-8 is read as GB18030 (as PaddleMIX does). Images smaller than 5 px on a side are left
out, as PaddleMIX does.

Everything else is :class:`~mindram.data.webdataset.WebDataset`'s: part files are the shards (split over ranks,
visited in a seeded order), streamed with bounded memory, a bad line (undecodable, too few columns, bad JSON or
image) is skipped, logged and counted in ``stats`` and replaced by the next one, and resume skips whole parts by
their line counts (``sizes.json`` beside them, else counted once).
"""
import base64
import binascii
import gzip
import io
import json
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
from PIL import Image

from ..errors import DataError
from .webdataset import WebDataset

__all__ = ["LaionFileList"]

CAPTION_KEYS = ("caption_en", "blip_caption_en")
MIN_SIZE = 5


def read_lines(path: Path) -> Iterator[Tuple[str, Dict[str, bytes]]]:
    """``(line number, {"line": bytes})`` of each line of a part file (gzip when it ends with ``.gz``)."""
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
        for lineno, line in enumerate(f, 1):
            yield str(lineno), {"line": line}


def parse_line(raw: bytes) -> Tuple[np.ndarray, str]:
    """``(uint8 RGB array, caption)`` of one part-file line; DataError naming what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("gb18030")
    columns = text.rstrip("\r\n").split("\t")
    if len(columns) < 6:
        raise DataError(f"{len(columns)} tab-separated columns, expected at least 6 (JSON in 2, base64 image in 5)")
    meta = json.loads(columns[2])
    if not isinstance(meta, dict):
        raise DataError(f"column 2 is JSON {type(meta).__name__}, expected an object with caption_en")
    caption = next((meta[k] for k in CAPTION_KEYS if meta.get(k)), "")
    with Image.open(io.BytesIO(base64.b64decode(columns[5], validate=True))) as im:
        rgb = np.asarray(im.convert("RGB"))
    if min(rgb.shape[:2]) < MIN_SIZE:
        raise DataError(f"image of {rgb.shape[1]}x{rgb.shape[0]} px, smaller than {MIN_SIZE} px (left out as by "
                        "PaddleMIX)")
    return rgb, str(caption).strip()


class LaionFileList(WebDataset):
    """Caption-only source over PaddleMIX's ``laion.filelist`` (module docstring); training only.

    Args:
        file_list: the ``laion.filelist`` path (``dataset_dir`` of a run config's ``data_loader``).
    """

    read_samples = staticmethod(read_lines)

    def __init__(self, file_list):  # pylint: disable=super-init-not-called (no tar member keys to parse)
        path = Path(file_list).expanduser()
        if not path.is_file():
            raise DataError(f"laion.filelist {path} not found")
        entries = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not entries:
            raise DataError(f"{path}: lists no part file")
        self._use_shards([self._part_path(path, entry) for entry in entries], f"laion.filelist {path}")

    @staticmethod
    def _part_path(file_list: Path, entry: str) -> Path:
        part = Path(entry).expanduser()
        return part if part.is_absolute() or part.exists() else file_list.parent / part

    def decode(self, shard: int, position: int, key: str,
               members: Dict[str, bytes]) -> Optional[Tuple[np.ndarray, str]]:
        """``(uint8 RGB array, caption)`` of line ``key`` of part ``shard``, or None (logged, counted)."""
        try:
            return parse_line(members["line"])
        except (DataError, ValueError, OSError, SyntaxError, binascii.Error, UnicodeDecodeError) as e:
            index = sum(self.sizes[:shard]) + position
            self.stats.mark_bad(index, f"{self.shards[shard]}: line {key}: {type(e).__name__}: {e}", "it is skipped")
            return None

    @property
    def parts(self) -> List[Path]:
        return list(self.shards)

"""PaddleMIX's LAION format (``--task_name laion.filelist``), streamed like webdataset shards.

``laion.filelist`` lists part files, one path per line (``laiondata-pathdir/part-00000``; a relative path is
taken as given when it exists from the working directory, else relative to the list's folder). A part file —
plain or ``.gz`` — holds one sample per line, tab-separated: column 2 a JSON object whose ``caption_en`` (else
``blip_caption_en``, else an empty caption, as PaddleMIX reads it) is the caption, column 5 the image in base64.
A line that is not UTF-8 is read as GB18030 (as PaddleMIX does). Images smaller than 5 px on a side are left
out, as PaddleMIX does.

Everything else is :class:`~mindram.data.webdataset.WebDataset`'s: part files are the shards (split over ranks,
visited in a seeded order), streamed with bounded memory, a bad line (undecodable, too few columns, bad JSON or
image) is skipped, logged and counted in ``stats`` and replaced by the next one, a corrupt or truncated ``.gz``
part or a line over ``max_member_bytes`` (64 MiB) skips the rest of its part (logged, counted), and resume skips
whole parts by their line counts (``sizes.json`` beside them, else counted once).
"""
import base64
import binascii
import gzip
import io
import json
import zlib
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
from PIL import Image

from ..errors import DataError
from ..utils.image_files import decode_checked
from ..utils.validation import check_int
from .tar_shard import GZIP_MAX_RATIO, MAX_MEMBER_BYTES
from .webdataset import WebDataset

__all__ = ["LaionFileList"]

CAPTION_KEYS = ("caption_en", "blip_caption_en")
MIN_SIZE = 5
#: default bound of one line of a part file (a base64 image and its JSON): 64 MiB
MAX_LINE_BYTES = MAX_MEMBER_BYTES


def read_lines(path: Path, max_line_bytes: int = MAX_LINE_BYTES,
               skip: int = 0) -> Iterator[Tuple[str, Dict[str, bytes]]]:
    """``(line number, {"line": bytes})`` of each line of a part file (gzip when it ends with ``.gz``) after the
    first ``skip``; a line over ``max_line_bytes`` or a corrupt/truncated gzip stream is a DataError naming the
    part and the line (the lines before it were yielded)."""
    lineno = 0
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            while True:
                line = f.readline(max_line_bytes + 1)
                if not line:
                    return
                lineno += 1
                if len(line) > max_line_bytes:
                    raise DataError(f"{path}: line {lineno} is over max_member_bytes={max_line_bytes} bytes "
                                    "(raise it for part files you trust)")
                if lineno > skip:
                    yield str(lineno), {"line": line}
    except (OSError, EOFError, zlib.error) as e:   # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: corrupt or truncated after line {lineno} ({type(e).__name__}: {e})") from e


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
        rgb = np.asarray(decode_checked(im, "column 5").convert("RGB"))   # the pixel budget before decoding
    if min(rgb.shape[:2]) < MIN_SIZE:
        raise DataError(f"image of {rgb.shape[1]}x{rgb.shape[0]} px, smaller than {MIN_SIZE} px (left out as by "
                        "PaddleMIX)")
    return rgb, str(caption).strip()


class LaionFileList(WebDataset):
    """Caption-only source over PaddleMIX's ``laion.filelist`` (module docstring); training only.

    Args:
        file_list: the ``laion.filelist`` path (``dataset_dir`` of a run config's ``data_loader``).
        max_member_bytes: the longest line read, default 64 MiB; a longer one ends the reading of its part,
            which is skipped from there on (logged, counted). Raise it for part files you trust.
    """

    def __init__(self, file_list, max_member_bytes: int = MAX_LINE_BYTES):  # pylint: disable=super-init-not-called
        self.max_member_bytes = check_int(max_member_bytes, "laion.filelist max_member_bytes", 1)
        path = Path(file_list).expanduser()
        if not path.is_file():
            raise DataError(f"laion.filelist {path} not found")
        entries = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not entries:
            raise DataError(f"{path}: lists no part file")
        self._use_shards([self._part_path(path, entry) for entry in entries], f"laion.filelist {path}")

    def shard_samples(self, path: Path, skip: int = 0, read: bool = True) -> Iterator[Tuple[str, Dict[str, bytes]]]:
        """The lines of one part file after the first ``skip`` (see :func:`read_lines`)."""
        return read_lines(path, self.max_member_bytes, skip)

    def max_samples(self, path: Path) -> Optional[int]:
        """The most lines a part file can hold by its size on disk (one byte each)."""
        size = path.stat().st_size
        return size * GZIP_MAX_RATIO if path.suffix == ".gz" else size

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

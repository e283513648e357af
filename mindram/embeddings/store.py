"""Reading a :func:`~mindram.embeddings.write_embeddings` export back, every file checked before it is trusted.

``manifest.json`` must be a JSON object of this format whose counts agree (``num_shards`` is ``num_items``
over ``shard_size``, rounded up); each shard's ``.json`` must describe exactly its part of the items (its
``start``/``stop``, one id per row, input positions inside its part, every item either a row or an error) and
its ``.npy`` must be a floating ``(rows, D)`` array with one row per id, of the same ``D`` as the other shards.
Any mismatch is a one-line :class:`~mindram.errors.DataError` naming the file and what was expected; nothing
is read silently wrong (40 ids with 41 vectors, int32 vectors read as zeros, a manifest claiming one shard of
five). A ``.npy`` header is read through a memory map first, so a shape larger than its file costs nothing.
"""
import json
import re
import tokenize
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import DataError
from ..utils.validation import is_int

__all__ = ["FORMAT", "KINDS", "MANIFEST", "check_no_extra_shards", "check_width", "complete_shards", "read_manifest",
           "read_shard", "shard_name"]

FORMAT = "mindram-embeddings/1"
KINDS = ("image", "text")
MANIFEST = "manifest.json"
_SHARD_FILE = re.compile(r"shard_(\d+)\.(npy|json)")
# what numpy raises on a corrupt .npy header (it parses the header as a Python literal)
_NPY_ERRORS = (OSError, ValueError, EOFError, SyntaxError, TypeError, OverflowError, tokenize.TokenError)


def shard_name(k: int) -> str:
    return f"shard_{k:05d}"


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:   # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DataError(f"{path}: not a readable JSON file ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: a JSON {type(data).__name__}, expected an object")
    return data


def _expect(path: Path, data: Dict[str, Any], key: str, ok, expected: str):
    value = data.get(key)
    if not ok(value):
        raise DataError(f"{path}: key {key!r} is {value!r:.80}, expected {expected}")
    return value


def read_manifest(out_dir) -> Dict[str, Any]:
    """The checked ``manifest.json`` of an export folder (module docstring)."""
    path = Path(out_dir) / MANIFEST
    manifest = _read_json(path)
    _expect(path, manifest, "format", lambda v: v == FORMAT, repr(FORMAT))
    _expect(path, manifest, "kind", lambda v: v in KINDS, f"one of {KINDS}")
    num_items = _expect(path, manifest, "num_items", lambda v: is_int(v) and v >= 0, "an int >= 0")
    shard_size = _expect(path, manifest, "shard_size", lambda v: is_int(v) and v >= 1, "an int >= 1")
    _expect(path, manifest, "num_shards", lambda v: is_int(v) and v == -(-num_items // shard_size),
            f"{-(-num_items // shard_size)} ({num_items} items in shards of {shard_size})")
    _expect(path, manifest, "normalize", lambda v: isinstance(v, bool), "true or false")
    return manifest


def check_no_extra_shards(out_dir, manifest: Dict[str, Any]) -> None:
    """DataError when the folder holds shard files past the manifest's ``num_shards``."""
    extra = sorted(p.name for p in Path(out_dir).glob("shard_*")
                   if (m := _SHARD_FILE.fullmatch(p.name)) and int(m.group(1)) >= manifest["num_shards"])
    if extra:
        raise DataError(f"{Path(out_dir) / MANIFEST}: num_shards is {manifest['num_shards']} but the folder also "
                        f"holds {extra[:3]}; the manifest does not belong to these shards")


def _check_meta(path: Path, meta: Dict[str, Any], manifest: Dict[str, Any], k: int) -> None:
    start = k * manifest["shard_size"]
    stop = min(manifest["num_items"], start + manifest["shard_size"])
    _expect(path, meta, "start", lambda v: v == start, str(start))
    _expect(path, meta, "stop", lambda v: v == stop, str(stop))
    _expect(path, meta, "shard", lambda v: v == k, str(k))
    ids = _expect(path, meta, "ids", lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v),
                  "a list of str")
    indices = _expect(path, meta, "indices", lambda v: isinstance(v, list) and len(v) == len(ids) and
                      all(is_int(i) for i in v) and all(start <= i < stop for i in v) and
                      all(a < b for a, b in zip(v, v[1:])),
                      f"one increasing input position in [{start}, {stop}) per id ({len(ids)} ids)")
    _expect(path, meta, "errors", lambda v: isinstance(v, list) and len(v) == stop - start - len(indices) and
            all(isinstance(e, dict) and is_int(e.get("index")) and start <= e["index"] < stop for e in v),
            f"{stop - start - len(indices)} error records (one per item of the shard without a row)")
    if manifest["kind"] == "text":
        _expect(path, meta, "texts", lambda v: isinstance(v, list) and len(v) == len(ids) and
                all(isinstance(t, str) for t in v), f"one str per id ({len(ids)})")


def _load_vectors(path: Path, rows: int, mmap: bool) -> np.ndarray:
    try:
        vectors = np.load(path, mmap_mode="r", allow_pickle=False)   # the header; no data is read yet
    except _NPY_ERRORS as e:   # a shape larger than the file is a ValueError of mmap
        raise DataError(f"{path}: not a readable .npy array ({type(e).__name__}: {e})") from e
    if not isinstance(vectors, np.ndarray):        # an .npz archive under a .npy name
        raise DataError(f"{path}: a {type(vectors).__name__}, expected one .npy array")
    if vectors.dtype.kind != "f":
        raise DataError(f"{path}: vectors of dtype {vectors.dtype}, expected floating point (float32)")
    if vectors.ndim != 2 or len(vectors) != rows:
        raise DataError(f"{path}: an array of shape {vectors.shape}, expected ({rows}, D): one row per id of "
                        f"{path.with_suffix('.json').name}")
    return vectors if mmap else np.array(vectors, np.float32)


def read_shard(out_dir, manifest: Dict[str, Any], k: int, mmap: bool = False) -> Tuple[Dict[str, Any], np.ndarray]:
    """``(meta, vectors)`` of shard ``k``, checked against each other and the manifest (module docstring);
    vectors as float32 in memory, or the file's memory map with ``mmap``."""
    out_dir = Path(out_dir)
    meta_path = out_dir / f"{shard_name(k)}.json"
    meta = _read_json(meta_path)
    _check_meta(meta_path, meta, manifest, k)
    return meta, _load_vectors(out_dir / f"{shard_name(k)}.npy", len(meta["ids"]), mmap)


def check_width(path: Path, vectors: np.ndarray, width: Optional[int]) -> Optional[int]:
    """The vectors' width when they have rows, after checking it against ``width`` of the shards before."""
    if not len(vectors):
        return width
    if width is not None and vectors.shape[1] != width:
        raise DataError(f"{path}: vectors of width {vectors.shape[1]}, the shards before hold width {width}")
    return int(vectors.shape[1])


def complete_shards(out_dir, manifest: Dict[str, Any]) -> Tuple[List[int], List[int]]:
    """``(shards with both files, shards missing one)`` of an export."""
    out_dir, present, missing = Path(out_dir), [], []
    for k in range(manifest["num_shards"]):
        done = (out_dir / f"{shard_name(k)}.npy").is_file() and (out_dir / f"{shard_name(k)}.json").is_file()
        (present if done else missing).append(k)
    return present, missing

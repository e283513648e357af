"""The per-file ``.npy`` layout of the seeds' offline flow: one vector per file, named after its input.

The Ascend offline-inference guide preprocesses ``images/<stem>.npy`` and ``texts/<stem>_<k>.npy`` (caption
``k`` of image ``<stem>``) and its inference tool writes one output file per input (``<name>_0.npy``, the
``_0`` being the output index). :func:`write_npy_dir` writes vectors that way (``<id>.npy``, an id's folders
kept as sub-folders) and :func:`load_npy_dir` reads any such folder back, so recall@K can be computed on
vectors made elsewhere; :func:`pair_captions_by_name` pairs caption files with image files by name.
"""
import logging
import re
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..utils.io import atomic_write

logger = logging.getLogger(__name__)

OUTPUT_INDEX = re.compile(r"_0$")
CAPTION_SUFFIX = re.compile(r"_(\d+)$")


def npy_name(item_id):
    """The relative file name of a vector id: its suffix (``.jpg``) replaced by ``.npy``; a leading ``/``
    or any ``..`` part is refused (the file must stay inside the folder)."""
    path = Path(str(item_id))
    if path.is_absolute() or ".." in path.parts or not path.name:
        raise DataError(f"vector id {item_id!r} cannot name a file inside the output folder")
    return path.with_suffix(".npy") if path.suffix else path.with_name(path.name + ".npy")


def write_npy_dir(out_dir, ids, vectors):
    """Write ``vectors[i]`` (float32, shape (D,)) to ``out_dir/<ids[i] without suffix>.npy``, each atomically."""
    out_dir = Path(out_dir)
    vectors = np.asarray(vectors, np.float32)
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise ValueError(f"expected one (D,) vector per id: {len(ids)} ids, vectors of shape {vectors.shape}")
    names = [npy_name(i) for i in ids]
    if len(set(names)) != len(names):
        twice = sorted({str(n) for n in names if names.count(n) > 1})[:3]
        raise DataError(f"several ids map to the same file in {out_dir}: {twice}")
    for name, vector in zip(names, vectors):
        with atomic_write(out_dir / name) as tmp, open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(vector))
    logger.info("wrote %d vectors to %s", len(ids), out_dir)
    return out_dir


def load_npy_dir(directory, strip_output_index=False):
    """``(ids, vectors (N, D) float32)`` of every ``*.npy`` under ``directory`` (recursively, sorted by path).

    An id is the file's path relative to ``directory`` without ``.npy``; ``strip_output_index`` also removes the
    ``_0`` output-index suffix an inference tool appends. Each file must hold one vector: shape ``(D,)``, or
    ``(1, D)``/``(1, 1, D)``. A file of another shape, a different ``D``, or an empty folder is a DataError.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: no such folder of .npy vectors")
    files = sorted(directory.rglob("*.npy"))
    if not files:
        raise DataError(f"{directory}: no .npy files (expected one vector per file)")
    ids, rows = [], []
    for path in files:
        try:
            value = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: not a readable .npy array ({e})") from e
        if value.size == 0 or value.ndim == 0 or any(d != 1 for d in value.shape[:-1]):
            raise DataError(f"{path}: holds an array of shape {value.shape}, expected one vector (D,) or (1, D)")
        value = value.reshape(-1).astype(np.float32)
        if rows and len(value) != len(rows[0]):
            raise DataError(f"{path}: a vector of width {len(value)}, the others in {directory} have {len(rows[0])}")
        item_id = path.relative_to(directory).with_suffix("").as_posix()
        ids.append(OUTPUT_INDEX.sub("", item_id) if strip_output_index else item_id)
        rows.append(value)
    return ids, np.stack(rows)


def pair_captions_by_name(text_ids, image_ids):
    """``{text id: image id}`` by the seeds' naming: caption ``<stem>_<k>`` belongs to image ``<stem>``
    (compared without folders). Captions whose name has no ``_<k>`` or whose image is missing are left out."""
    by_stem = {}
    for image_id in image_ids:
        by_stem.setdefault(Path(image_id).name, image_id)
    pairs = {}
    for text_id in text_ids:
        stem = CAPTION_SUFFIX.sub("", Path(text_id).name)
        if stem != Path(text_id).name and stem in by_stem:
            pairs[text_id] = by_stem[stem]
    return pairs

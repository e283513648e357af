"""The per-file ``.npy`` layout of the seeds' offline flow: one vector per file, named after its input.

The Ascend offline-inference guide preprocesses ``images/<stem>.npy`` and ``texts/<stem>_<k>.npy`` (caption
``k`` of image ``<stem>``) and its inference tool, ais_bench, writes one file per input and model output,
``<input name>_<output index>.npy`` (``save_tensors_to_file``: the input's base name up to its first ``.``,
then ``_<i>``; a tower has one output, so ``1007129816_0.npy`` for an image and ``1007129816_3_0.npy`` for its
caption 3). :func:`write_npy_dir` writes vectors that way (``<id>.npy``, an id's folders kept as sub-folders)
and :func:`load_npy_dir` reads any such folder back, so recall@K can be computed on vectors made elsewhere;
:func:`strip_output_index` removes ais_bench's output index and :func:`pair_captions_by_name` pairs caption
files with image files by name.

A folder is read without leaving it: a symbolic link (file or folder) whose target lies outside the folder is
skipped with a warning naming it, unless ``follow_symlinks=True``. Hidden temporaries of an interrupted
:func:`~mindram.utils.io.atomic_write` (``.<name>.<hex>.tmp.npy``) are not vectors and are skipped too.
"""
import logging
import os
import re
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..utils.image_files import list_image_files
from ..utils.io import atomic_write

logger = logging.getLogger(__name__)

OUTPUT_INDEX = re.compile(r"_0$")
CAPTION_SUFFIX = re.compile(r"_(\d+)$")
TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp\.npy$")   # atomic_write's temporary beside <name>.npy


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


def vector_files(directory, follow_symlinks=False):
    """The ``*.npy`` files under ``directory`` (recursively, sorted by path), hidden atomic-write temporaries left
    out. Without ``follow_symlinks`` a link resolving outside ``directory`` is skipped with a warning naming it
    (:func:`~mindram.utils.image_files.list_image_files`); with it, links are followed (folders once each)."""
    if not follow_symlinks:
        return [p for p in list_image_files(directory, (".npy",)) if not TEMPORARY.match(p.name)]
    files, seen = [], set()
    for parent, folders, names in os.walk(directory, followlinks=True):
        seen.add(os.path.realpath(parent))
        folders[:] = [f for f in folders if os.path.realpath(os.path.join(parent, f)) not in seen]  # no loops
        files += [Path(parent, n) for n in names if n.lower().endswith(".npy") and not TEMPORARY.match(n)
                  and os.path.isfile(os.path.join(parent, n))]
    return sorted(files)


def strip_output_index(ids):
    """``ids`` without ais_bench's output index: ``<input name>_0`` -> ``<input name>`` (a CLIP tower has one
    output, index 0); an id without it is a DataError naming it."""
    bad = [i for i in ids if not OUTPUT_INDEX.search(i)]
    if bad:
        raise DataError(f"{bad[0]}: not an output of ais_bench for a one-output tower (<input name>_0.npy); "
                        f"{len(bad)} of {len(ids)} files lack the _0 output index")
    return [OUTPUT_INDEX.sub("", i) for i in ids]


def looks_like_ais_bench(image_ids, text_ids):
    """Whether two vector folders read as ais_bench's outputs: every file ends in the output index ``_0``. (Guide
    names that all end in ``_0`` too pair the same way with or without it: ``<s>_0_0`` with ``<s>_0``.)"""
    return bool(image_ids) and bool(text_ids) and all(OUTPUT_INDEX.search(i) for i in [*image_ids, *text_ids])


_remove_output_index = strip_output_index   # load_npy_dir's argument of that name hides the function


def load_npy_dir(directory, strip_output_index=False, follow_symlinks=False):  # pylint: disable=redefined-outer-name
    """``(ids, vectors (N, D) float32)`` of every ``*.npy`` under ``directory`` (recursively, sorted by path).

    An id is the file's path relative to ``directory`` without ``.npy``; ``strip_output_index`` also removes the
    ``_0`` output-index suffix ais_bench appends (every file must have it). Each file must hold one vector: shape
    ``(D,)``, or ``(1, D)``/``(1, 1, D)``. A file of another shape, a different ``D``, or an empty folder is a
    DataError. Links leading out of ``directory`` are skipped with a warning unless ``follow_symlinks``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: no such folder of .npy vectors")
    files = vector_files(directory, follow_symlinks)
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
        ids.append(path.relative_to(directory).with_suffix("").as_posix())
        rows.append(value)
    return (_remove_output_index(ids) if strip_output_index else ids), np.stack(rows)


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

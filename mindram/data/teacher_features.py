"""A store of CLIP-teacher features computed once over a tagging training set (docs/ram.md#offline-teacher-features).

RAM / RAM++ training distils the frozen CLIP image feature and (RAM++) aligns with the CLIP text features of the
captions. The recognize-anything authors precompute both; ``python -m mindram.extract_teacher_features`` writes
them (:mod:`mindram.trainer.teacher_features`) and the tagging pipeline reads them instead of running the
teacher. Layout of a store directory::

    manifest.json     format, teacher (name, weights sha256, projection_dim), dataset identity (source type,
                      number of records, sha256 of the records' identities and of their captions), the
                      teacher preprocessing, the skipped records, ``complete`` (false while extracting)
    records.jsonl     per record: image path + size + mtime_ns (in-memory images: a sha256 of the pixels),
                      number of captions, sha256 of its captions
    image/            a :func:`mindram.embeddings.write_embeddings` export: one un-normalised (D,) feature per
                      readable record (item = record index), the teacher's ``visual`` output
    text/             (when written) the same for every caption of every record, L2-normalised; items are the
                      records' captions in order (record i's caption k is item ``offset[i] + k``)

Records whose image could not be read at extraction have no image feature: the pipeline treats them as
unreadable images (substituted by the next record that has features, counted in ``source.bad_items``).
Features are memory-mapped, not loaded, so a store larger than memory works.
"""
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..embeddings import store
from ..errors import ConfigError, DataError
from ..utils.io import atomic_write
from .base import Record

logger = logging.getLogger(__name__)

FORMAT = "mindram-teacher-features/1"
MANIFEST, RECORDS = "manifest.json", "records.jsonl"
IMAGE_DIR, TEXT_DIR = "image", "text"
COLUMNS = {"image": "teacher_image_features", "text": "teacher_text_features"}


def record_captions(caption):
    """A record's captions as a non-empty list (one string is one caption; none is ``[""]``), the list every
    caption draw (and the caption feature store) indexes."""
    return [caption] if isinstance(caption, str) else list(caption) or [""]


def pick_caption(num_captions, seed, epoch, index):
    """The caption a training sample uses: drawn per (seed, epoch, record index)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, index, 3]))
    return int(rng.integers(num_captions))


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _json_sha256(value):
    return _sha256(json.dumps(value, ensure_ascii=False, sort_keys=True).encode("utf-8"))


def record_identity(record):
    """What identifies one record: image path + size + mtime_ns (a missing file: size None), or a sha256 of
    an in-memory image's pixels; its number of captions and their sha256."""
    image, captions = record.image, record_captions(record.caption)
    if isinstance(image, (str, bytes, os.PathLike)):
        path = os.fsdecode(image)
        try:
            stat = os.stat(path)
            entry = {"image": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        except OSError:
            entry = {"image": path, "size": None, "mtime_ns": None}
    else:
        pixels = np.ascontiguousarray(np.asarray(image))
        entry = {"image": None, "pixels_sha256": _sha256(f"{pixels.dtype.str}{pixels.shape}".encode() +
                                                         pixels.tobytes())}
    entry.update(num_captions=len(captions), captions_sha256=_json_sha256(captions))
    return entry


def dataset_identity(source, progress=None):
    """``(summary, records)`` of a tagging source: per-record identities (:func:`record_identity`) and a
    summary (source type, number of records, sha256 over the identities and over the captions)."""
    records = [record_identity(Record(*source[i])) for i in tqdm(
        range(len(source)), desc="dataset identity", unit="record", disable=None if progress is None else not progress)]
    summary = {"source": type(source).__name__, "num_records": len(records),
               "records_sha256": _json_sha256([{k: v for k, v in r.items() if k != "captions_sha256"}
                                               for r in records]),
               "captions_sha256": _json_sha256([r["captions_sha256"] for r in records])}
    return summary, records


def first_record_difference(stored, current):
    """One line naming the first record whose identity differs, or None."""
    if len(stored) != len(current):
        return f"{len(stored)} records at extraction, the training set has {len(current)}"
    for i, (old, new) in enumerate(zip(stored, current)):
        for key in ("image", "size", "mtime_ns", "pixels_sha256", "num_captions", "captions_sha256"):
            if old.get(key) != new.get(key):
                what = new.get("image") or "in-memory image"
                return f"record {i} ({what}): {key} {old.get(key)!r} at extraction, now {new.get(key)!r}"
    return None


def write_json(path, data):
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)


def write_records(path, records):
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for entry in records:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")


def read_manifest(directory):
    """The manifest of a store directory; a missing, unreadable or foreign one is a ConfigError."""
    path = Path(directory).expanduser() / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"tagging.teacher_features: {path} not found (write the store with python -m "
                          f"mindram.extract_teacher_features)") from e
    except (OSError, ValueError) as e:
        raise ConfigError(f"tagging.teacher_features: cannot read {path} ({type(e).__name__}: {e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(f"tagging.teacher_features: {path} is not a teacher feature store (format "
                          f"{manifest.get('format') if isinstance(manifest, dict) else None!r}, expected {FORMAT!r})")
    return manifest


class _Vectors:
    """Memory-mapped rows of a ``write_embeddings`` export, looked up by item position (-1: not written)."""

    def __init__(self, directory, num_items):
        manifest = store.read_manifest(directory)   # every read checked: manifest, ids vs rows, dtype, width
        if manifest["num_items"] != num_items:
            raise DataError(f"{directory}: {manifest['num_items']} items, expected {num_items}")
        store.check_no_extra_shards(directory, manifest)
        self.shard_of = np.full(num_items, -1, np.int32)
        self.row_of = np.full(num_items, -1, np.int64)
        self.shards, self.errors, width = [], [], None
        for k in range(manifest["num_shards"]):
            meta, vectors = store.read_shard(directory, manifest, k, mmap=True)
            width = store.check_width(directory / f"{store.shard_name(k)}.npy", vectors, width)
            self.shards.append(vectors)
            positions = np.asarray(meta["indices"], np.int64)
            self.shard_of[positions], self.row_of[positions] = k, np.arange(len(positions))
            self.errors += meta["errors"]
        self.width = width or 0

    def has(self, position):
        return self.shard_of[position] >= 0

    def __getitem__(self, position):
        return np.array(self.shards[self.shard_of[position]][self.row_of[position]], np.float32)


class TeacherFeatureStore:
    """A complete store (module docstring), opened read-only: ``manifest``, ``records``, ``image_features(i)``,
    ``text_features(i, k)``, ``missing()`` (records without an image feature)."""

    def __init__(self, directory):
        self.directory = Path(directory).expanduser()
        self.manifest = read_manifest(self.directory)
        if not self.manifest.get("complete"):
            raise ConfigError(f"tagging.teacher_features: the extraction into {self.directory} did not finish; run "
                              f"python -m mindram.extract_teacher_features again to resume it")
        try:
            with open(self.directory / RECORDS, encoding="utf-8") as f:
                self.records = [json.loads(line) for line in f]
            self.image = _Vectors(self.directory / IMAGE_DIR, len(self.records))
            counts = np.asarray([r["num_captions"] for r in self.records], np.int64)
            self.caption_offsets = np.concatenate([[0], np.cumsum(counts)])
            self.text = _Vectors(self.directory / TEXT_DIR, int(self.caption_offsets[-1])) \
                if self.manifest.get("text") else None
        except (OSError, ValueError, KeyError, DataError) as e:
            raise ConfigError(f"tagging.teacher_features: {self.directory} is damaged ({type(e).__name__}: {e}); "
                              f"extract it again") from e

    def __len__(self):
        return len(self.records)

    @property
    def has_text(self):
        return self.text is not None

    def missing(self):
        """``[(record index, reason)]`` of the records without an image feature (unreadable at extraction)."""
        reasons = {e["index"]: e["error"] for e in self.image.errors}
        return [(i, reasons.get(i, "not extracted")) for i in np.flatnonzero(self.image.shard_of < 0).tolist()]

    def image_features(self, index):
        return self.image[index]

    def text_features(self, index, caption):
        return self.text[int(self.caption_offsets[index]) + caption]

    def view(self, image=True, text=False):
        """The pipeline's reader of the wanted columns (:class:`StoredTeacherColumns`)."""
        if text and not self.has_text:
            raise ConfigError(f"tagging.teacher_features: {self.directory} has no caption features (RAM++ "
                              f"alignment needs them); extract it with the RAM++ run config")
        return StoredTeacherColumns(self, image, text)


class StoredTeacherColumns:
    """Columns of one sample from the store: the image feature and/or the feature of the caption the sample
    draws (:func:`pick_caption`, as the online pipeline draws the caption it tokenises)."""

    def __init__(self, store, image, text):
        self.store, self.image, self.text = store, bool(image), bool(text)
        self.names = [COLUMNS[k] for k, keep in (("image", self.image), ("text", self.text)) if keep]

    def __call__(self, index, epoch, seed):
        row = [self.store.image_features(index)] if self.image else []
        if self.text:
            count = int(self.store.records[index]["num_captions"])
            row.append(self.store.text_features(index, pick_caption(count, seed, epoch, index)))
        return row

"""Offline vector inference: embeddings of many images or texts written to disk in shards.

Layout of ``out_dir``::

    manifest.json        what was exported (kind, item count, shard size, a hash of the item ids)
    shard_00000.json     per shard: ids and input positions of its rows, and its bad items
    shard_00000.npy      per shard: float32 (rows, D) — written last, so it marks the shard complete
    index.jsonl          one line per vector: {"id", "index" (input position), "row" (in load_embeddings'
                         array), "shard", "shard_row"[, "text"]}
    errors.jsonl         one line per skipped item: {"id", "index", "error"}

Atomic: every file is written through :func:`mindram.utils.io.atomic_write` (a hidden temporary beside it,
checked — a shard is read back — and renamed into place; a failed write removes it), so an interrupted run
never leaves a partial shard visible (temporaries of a killed process are removed by the next run).
Resumable: running again with the same items skips the complete shards and computes the rest (a different
item list or shard size is refused unless ``overwrite=True``). Items that cannot be read or tokenized are
skipped and listed in ``errors.jsonl``; errors of the model itself stop the run (re-run to resume). One
writer per ``out_dir`` at a time.

``layout="npy"`` writes the seeds' per-file layout instead (``<id>.npy``, one vector per file, see
:mod:`.npy_dir`; resumable too: items whose file exists are skipped), and :func:`load_embeddings` reads both.
"""
import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import DataError
from ..models.clip.zero_shot import encode_in_batches, l2_normalize, tokenize_with
from ..pipeline.base import ITEM_ERRORS, build_image_processor
from ..pipeline.feature_extraction import FeatureExtractionPipeline
from ..utils.io import atomic_write
from .npy_dir import load_npy_dir, npy_name, write_npy_dir
from .store import (FORMAT, KINDS, check_no_extra_shards, check_width, complete_shards, read_manifest, read_shard,
                    shard_name as _shard_name)

logger = logging.getLogger(__name__)

LAYOUTS = ("shards", "npy")


def _default_ids(items, kind):
    return [os.fspath(x) if kind == "image" and isinstance(x, (str, os.PathLike)) else str(i)
            for i, x in enumerate(items)]


def _fingerprint(ids, items, kind):
    digest = hashlib.sha256()
    for i, item_id in enumerate(ids):
        digest.update(json.dumps(item_id).encode("utf-8"))
        if kind == "text":
            digest.update(json.dumps(str(items[i])).encode("utf-8"))
    return digest.hexdigest()


def _write_json(path, data):
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)


def _write_jsonl(path, rows):
    with atomic_write(path, allow_empty=True) as tmp, open(tmp, "w", encoding="utf-8") as f:  # no rows: empty
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _check_npy(tmp, shape, path):
    """Raise unless the temporary ``tmp`` of shard ``path`` reads back as a float32 array of ``shape``."""
    written = np.load(tmp, mmap_mode="r", allow_pickle=False)
    if written.shape != shape or written.dtype != np.float32:
        raise DataError(f"{path}: the shard reads back as a {written.dtype} array of shape {written.shape}, "
                        f"expected float32 {shape}; it was not written (re-run to resume)")


def _write_npy(path, array):
    array = np.ascontiguousarray(array, dtype=np.float32)
    with atomic_write(path, check=lambda tmp: _check_npy(tmp, array.shape, path)) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())


def _prepare_dir(out_dir, manifest, overwrite):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".*.tmp*"):  # temporaries of a killed run
        stale.unlink()
    if overwrite:  # only the files of an export; anything else in the folder stays
        for path in [*out_dir.glob("shard_*.npy"), *out_dir.glob("shard_*.json")] + \
                [out_dir / n for n in ("manifest.json", "index.jsonl", "errors.jsonl")]:
            if path.is_file():
                path.unlink()
    path = out_dir / "manifest.json"
    if path.is_file():
        try:
            old = read_manifest(out_dir)
        except DataError as e:
            raise DataError(f"{e}; use another out_dir or overwrite=True to start again") from e
        keys = ("format", "kind", "num_items", "shard_size", "normalize", "items_sha256", "model")
        diff = [k for k in keys if old.get(k) != manifest[k]]
        if diff:
            raise DataError(f"{out_dir} holds a different export (differs in {diff}); use another out_dir or "
                            "overwrite=True to start again")
        logger.info("resuming the export in %s", out_dir)
    else:
        _write_json(path, manifest)
    return out_dir


class _Encoder:
    """Item → model input, and batch → vectors, for one kind."""

    def __init__(self, model, kind, image_processor, tokenizer, batch_size, num_workers):
        self.model, self.kind, self.batch_size = model, kind, batch_size
        self.tokenizer = tokenizer
        self.processor = build_image_processor(model, image_processor) if kind == "image" else None
        self.pool = ThreadPoolExecutor(num_workers) if num_workers and kind == "image" else None

    def _load(self, item):
        try:
            if self.kind == "text":
                if not isinstance(item, str):
                    raise TypeError(f"a text must be a str, got {type(item).__name__}")
                return tokenize_with(self.tokenizer, [item], self.model.context_length)[0], None
            return self.processor.preprocess(item), None
        except ITEM_ERRORS as e:
            return None, f"{type(e).__name__}: {e}"

    def __call__(self, items):
        """``(vectors (n_ok, D), ok positions, [(position, error)])`` of a batch of items."""
        loaded = list(self.pool.map(self._load, items) if self.pool else map(self._load, items))
        ok = [i for i, (x, _) in enumerate(loaded) if x is not None]
        errors = [(i, err) for i, (x, err) in enumerate(loaded) if x is None]
        if not ok:
            return None, ok, errors
        inputs = np.stack([loaded[i][0] for i in ok])
        encode = self.model.get_text_features if self.kind == "text" else self.model.get_image_features
        return encode_in_batches(encode, inputs, self.batch_size), ok, errors

    def close(self):
        if self.pool:
            self.pool.shutdown()


def _encode_shard(encoder, items, ids, start, stop, normalize, bar):
    """Vectors ``(n_ok, D)`` of ``items[start:stop]`` and the shard's metadata (rows, ids, errors)."""
    vectors, rows, errors = [], [], []
    for b in range(start, stop, encoder.batch_size):
        batch = items[b:min(stop, b + encoder.batch_size)]
        out, ok, bad = encoder(batch)
        if out is not None:
            vectors.append(l2_normalize(out) if normalize else out)
        rows += [b + i for i in ok]
        for i, err in bad:
            logger.warning("skipping %s %d (%s): %s", encoder.kind, b + i, ids[b + i], err)
            errors.append({"id": ids[b + i], "index": b + i, "error": err})
        bar.update(len(batch))
    meta = {"start": start, "stop": stop, "indices": rows, "ids": [ids[i] for i in rows], "errors": errors}
    if encoder.kind == "text":
        meta["texts"] = [items[i] for i in rows]
    return (np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32)), meta


def write_embeddings(model, items, out_dir, kind="image", batch_size=64, image_processor=None, tokenizer=None,
                     ids=None, shard_size=4096, normalize=True, num_workers=0, overwrite=False, progress=None,
                     layout="shards"):
    """Embed ``items`` and write them to ``out_dir`` (see the module docstring for the layout).

    Args:
        model: a ``CLIPModel`` or a name/directory/checkpoint for ``CLIPModel.from_pretrained``.
        items: image paths/PIL images/arrays (``kind="image"``) or strings (``kind="text"``).
        kind: ``"image"`` or ``"text"``.
        batch_size: items per model call. shard_size: items per shard (rounded up to a batch multiple).
        image_processor: for images; default: the model's size and the catalog preprocessing of its weights.
        tokenizer: for texts; default ``mindram.tokenize``.
        ids: one id per item (default: the path for image paths, else the position as a string).
        normalize: L2-normalise the vectors (inner product = cosine similarity).
        num_workers: threads decoding images (0: in the calling thread).
        overwrite: delete a previous export in ``out_dir`` first instead of resuming it.
        progress: tqdm bar over items (None: tqdm's default, shown on a terminal).
        layout: ``"shards"`` (the layout above) or ``"npy"`` (one ``<id>.npy`` per item; ids lose their suffix).

    Returns:
        a summary dict: ``num_items``, ``num_vectors``, ``num_errors``, ``shards``, ``shards_skipped``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    items = list(items)
    ids = _default_ids(items, kind) if ids is None else [str(i) for i in ids]
    if len(ids) != len(items):
        raise ValueError(f"got {len(ids)} ids for {len(items)} items")
    if shard_size <= 0 or batch_size <= 0:
        raise ValueError(f"batch_size and shard_size must be positive, got {batch_size}, {shard_size}")
    shard_size = -(-int(shard_size) // batch_size) * batch_size
    model = FeatureExtractionPipeline.load_model(model)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "npy":
        encoder = _Encoder(model, kind, image_processor, tokenizer, batch_size, num_workers)
        try:
            return _write_npy_layout(encoder, items, ids, Path(out_dir), normalize, overwrite, progress)
        finally:
            encoder.close()
    num_shards = -(-len(items) // shard_size)
    manifest = {"format": FORMAT, "kind": kind, "num_items": len(items), "shard_size": shard_size,
                "num_shards": num_shards, "normalize": bool(normalize), "items_sha256": _fingerprint(ids, items, kind),
                "model": getattr(getattr(model, "config", None), "checkpoint_name_or_path", None)}
    out_dir = _prepare_dir(out_dir, manifest, overwrite)
    encoder = _Encoder(model, kind, image_processor, tokenizer, batch_size, num_workers)
    skipped = 0
    bar = tqdm(total=len(items), desc=f"{kind} embeddings", unit=kind,
               disable=None if progress is None else not progress)
    try:
        for k in range(num_shards):
            start, stop = k * shard_size, min(len(items), (k + 1) * shard_size)
            if _reusable_shard(out_dir, manifest, k, ids):
                skipped += 1
                bar.update(stop - start)
                continue
            vectors, meta = _encode_shard(encoder, items, ids, start, stop, normalize, bar)
            meta["shard"] = k
            _write_json(out_dir / f"{_shard_name(k)}.json", meta)
            _write_npy(out_dir / f"{_shard_name(k)}.npy", vectors)  # last: marks the shard complete
    finally:
        bar.close()
        encoder.close()
    summary = _write_index(out_dir, manifest)
    summary.update(shards=num_shards, shards_skipped=skipped, out_dir=str(out_dir))
    logger.info("%s embeddings in %s: %d vectors, %d errors (%d of %d shards reused)", kind, out_dir,
                summary["num_vectors"], summary["num_errors"], skipped, num_shards)
    return summary


def _reusable_shard(out_dir, manifest, k, ids):
    """Whether shard ``k`` of a resumed export is complete and passes every check of :func:`.store.read_shard`
    (its ids those of this job's items); a shard that fails is logged and computed again."""
    if not ((out_dir / f"{_shard_name(k)}.npy").is_file() and (out_dir / f"{_shard_name(k)}.json").is_file()):
        return False
    try:
        meta, _ = read_shard(out_dir, manifest, k, mmap=True)
        if meta["ids"] != [ids[i] for i in meta["indices"]]:
            raise DataError(f"{out_dir / _shard_name(k)}.json: its ids are not those of the items at its indices")
    except DataError as e:
        logger.warning("%s; computing shard %d again", e, k)
        return False
    return True


def _write_npy_layout(encoder, items, ids, out_dir, normalize, overwrite, progress):
    """Per-file layout: vectors of the items whose ``<id>.npy`` is missing (all with ``overwrite``)."""
    todo = [i for i in range(len(items)) if overwrite or not (out_dir / npy_name(ids[i])).is_file()]
    errors = []
    bar = tqdm(total=len(todo), desc=f"{encoder.kind} embeddings", unit=encoder.kind,
               disable=None if progress is None else not progress)
    try:
        for b in range(0, len(todo), encoder.batch_size):
            batch = todo[b:b + encoder.batch_size]
            out, ok, bad = encoder([items[i] for i in batch])
            if out is not None:
                write_npy_dir(out_dir, [ids[batch[j]] for j in ok], l2_normalize(out) if normalize else out)
            for j, err in bad:
                logger.warning("skipping %s %d (%s): %s", encoder.kind, batch[j], ids[batch[j]], err)
                errors.append({"id": ids[batch[j]], "index": batch[j], "error": err})
            bar.update(len(batch))
    finally:
        bar.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out_dir / "errors.jsonl", errors)
    return {"num_items": len(items), "num_vectors": len(todo) - len(errors), "num_errors": len(errors),
            "skipped_existing": len(items) - len(todo), "out_dir": str(out_dir)}


def _write_index(out_dir, manifest):
    index, errors, row, kind = [], [], 0, manifest["kind"]
    for k in range(manifest["num_shards"]):
        meta, _ = read_shard(out_dir, manifest, k, mmap=True)
        for j, (i, item_id) in enumerate(zip(meta["indices"], meta["ids"])):
            entry = {"id": item_id, "index": i, "row": row, "shard": f"{_shard_name(k)}.npy", "shard_row": j}
            if kind == "text":
                entry["text"] = meta["texts"][j]
            index.append(entry)
            row += 1
        errors += meta["errors"]
    _write_jsonl(out_dir / "index.jsonl", index)
    _write_jsonl(out_dir / "errors.jsonl", errors)
    return {"num_items": row + len(errors), "num_vectors": row, "num_errors": len(errors)}


def load_embeddings(out_dir):
    """``(ids, vectors)`` of an export: the ids (list of str) and a float32 ``(N, D)`` array, in input order.

    Every file is checked first (:mod:`.store`): a manifest, shard or vector file that does not match is a
    one-line DataError naming it. An unfinished export (missing shards) is read as far as it is complete, with a
    warning. A folder without ``manifest.json`` that holds ``.npy`` files is read in the per-file layout
    (:func:`.npy_dir.load_npy_dir`).
    """
    out_dir = Path(out_dir)
    manifest_path = out_dir / "manifest.json"
    if not manifest_path.is_file():
        if out_dir.is_dir() and any(out_dir.rglob("*.npy")):
            return load_npy_dir(out_dir)
        raise FileNotFoundError(f"{out_dir} is not an embeddings export (no manifest.json, no .npy files)")
    manifest = read_manifest(out_dir)
    check_no_extra_shards(out_dir, manifest)
    present, missing = complete_shards(out_dir, manifest)
    ids, parts, width = [], [], None
    for k in present:
        meta, vectors = read_shard(out_dir, manifest, k)
        width = check_width(out_dir / f"{_shard_name(k)}.npy", vectors, width)
        if len(vectors):
            parts.append(vectors)
        ids += meta["ids"]
    if missing:
        logger.warning("%s: export incomplete, %d of %d shards missing (first: %d); re-run write_embeddings to "
                       "finish it", out_dir, len(missing), manifest["num_shards"], missing[0])
    vectors = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    return ids, vectors

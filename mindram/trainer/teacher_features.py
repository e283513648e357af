"""Offline CLIP-teacher features for the ``image_tagging`` task: extraction and the start-of-training check
(the store's layout: :mod:`mindram.data.teacher_features`; docs/ram.md#offline-teacher-features).

:func:`extract_teacher_features` runs the configured teacher once over ``train_dataset`` with its eval
preprocessing (no augmentation, as the RAM++ authors precompute): image features of every readable record and,
for a RAM++ student with the alignment loss, the L2-normalised text features of every caption of every record
(each caption tokenised as the online pipeline does). Both are :func:`mindram.embeddings.write_embeddings`
exports, so the run is atomic per shard and resumable; the manifest is written first with ``complete: false``
and rewritten at the end. :func:`open_checked_store` opens a store for training and refuses one that does not
match the configured teacher (weights sha256, preprocessing) or the training set (one line naming the first
difference).
"""
import json
import logging
from pathlib import Path

from ..data.teacher_features import (FORMAT, IMAGE_DIR, MANIFEST, RECORDS, TEXT_DIR, TeacherFeatureStore,
                                     dataset_identity, first_record_difference, read_manifest, record_captions,
                                     write_json, write_records)
from ..embeddings import write_embeddings
from ..errors import ConfigError, DataError
from ..utils.embedding_cache import weights_digest

logger = logging.getLogger(__name__)


def teacher_identity(task, teacher):
    """Name (the ``tagging.teacher`` value), weights sha256 and output width of the task's teacher."""
    spec = task.tagging.teacher
    name = spec if isinstance(spec, str) else f"random CLIP {json.dumps(spec, sort_keys=True)} seed {task.args.seed}"
    return {"name": name, "weights_sha256": weights_digest(teacher), "projection_dim": teacher.config.projection_dim}


def _preprocessing(processor):
    return {"type": type(processor).__name__, **processor.to_dict(), "augmentation": None}


def _check_resumable(out_dir, manifest):
    """Refuse to resume an unfinished or finished store of another teacher/dataset/preprocessing."""
    if not (out_dir / MANIFEST).is_file():
        return
    old = read_manifest(out_dir)
    for key in ("teacher", "dataset", "preprocessing", "text"):
        if old.get(key) != manifest[key]:
            raise DataError(f"{out_dir} holds teacher features of another {key} ({old.get(key)!r:.120}); use "
                            f"another --output or --overwrite")


def extract_teacher_features(task, output, batch_size=64, overwrite=False, num_workers=0, progress=None):
    """Write the teacher feature store of ``task``'s training set into ``output``; returns the manifest."""
    if task.tagging.teacher is None:
        raise ConfigError("tagging.teacher: no teacher configured, nothing to extract (give a CLIP name, "
                          "directory or a mapping of CLIPConfig fields)")
    out_dir = Path(output).expanduser()
    teacher, source = task.load_teacher(), task.source("train_dataset")
    processor = teacher.image_processor
    with_text = task.uses_alignment_model
    summary, records = dataset_identity(source, progress)
    manifest = {"format": FORMAT, "teacher": teacher_identity(task, teacher), "dataset": summary,
                "preprocessing": _preprocessing(processor), "text": with_text, "complete": False}
    if not overwrite:
        _check_resumable(out_dir, manifest)
    write_json(out_dir / MANIFEST, manifest)
    write_records(out_dir / RECORDS, records)
    images = [source[i][0] for i in range(len(source))]
    common = dict(batch_size=batch_size, overwrite=overwrite, progress=progress)
    image = write_embeddings(teacher, images, out_dir / IMAGE_DIR, kind="image", image_processor=processor,
                             ids=[str(i) for i in range(len(images))], normalize=False, num_workers=num_workers,
                             **common)
    del images
    with open(out_dir / IMAGE_DIR / "errors.jsonl", encoding="utf-8") as f:
        skipped = [json.loads(line) for line in f]
    manifest["image"] = {"num_features": image["num_vectors"], "num_skipped": len(skipped),
                         "skipped": [{"record": int(e["index"]), "error": e["error"]} for e in skipped]}
    if with_text:
        captions, ids = [], []
        for i in range(len(source)):
            texts = record_captions(source[i][1])
            captions += texts
            ids += [f"{i}_{k}" for k in range(len(texts))]
        text = write_embeddings(teacher, captions, out_dir / TEXT_DIR, kind="text", ids=ids, normalize=True,
                                **common)
        if text["num_errors"]:
            raise DataError(f"{out_dir / TEXT_DIR}: {text['num_errors']} caption(s) could not be encoded (see "
                            f"errors.jsonl there)")
        manifest["num_caption_features"] = text["num_vectors"]
    manifest["complete"] = True
    write_json(out_dir / MANIFEST, manifest)
    for entry in manifest["image"]["skipped"][:10]:
        logger.warning("record %d has no teacher features (%s); training substitutes it", entry["record"],
                       entry["error"])
    logger.info("teacher features of %d records in %s (%d skipped)", len(records), out_dir, len(skipped))
    return manifest


def open_checked_store(task):
    """The store of ``tagging.teacher_features``, checked against the task's teacher and training set.

    The teacher is compared only when ``tagging.teacher`` is set (it is loaded once for its weights sha256,
    never run); with ``tagging.teacher: null`` the store is trusted for the teacher. Raises a one-line
    ConfigError naming the first mismatch."""
    store = TeacherFeatureStore(task.tagging.teacher_features)
    where = f"tagging.teacher_features: {store.directory}"
    manifest = store.manifest
    if task.tagging.teacher is not None:
        teacher = task.load_teacher()
        current = teacher_identity(task, teacher)
        for key in ("weights_sha256", "projection_dim"):
            if manifest["teacher"].get(key) != current[key]:
                raise ConfigError(f"{where} was extracted with teacher {manifest['teacher'].get('name')!r:.100} "
                                  f"({key} {str(manifest['teacher'].get(key))[:16]}), the configured "
                                  f"tagging.teacher {current['name']!r:.100} has {str(current[key])[:16]}; extract "
                                  f"it again")
        if manifest.get("preprocessing") != _preprocessing(teacher.image_processor):
            raise ConfigError(f"{where} was extracted with preprocessing {manifest.get('preprocessing')}, the teacher "
                              f"now uses {_preprocessing(teacher.image_processor)}")
        del teacher
    width = task.model.config.label_embed_dim
    if manifest["teacher"].get("projection_dim") != width:
        raise ConfigError(f"{where} holds {manifest['teacher'].get('projection_dim')}-d features, the model's "
                          f"label_embed_dim is {width}")
    summary, records = dataset_identity(task.source("train_dataset"))
    if summary != manifest["dataset"]:
        difference = first_record_difference(store.records, records) or \
            f"source {manifest['dataset'].get('source')} at extraction, now {summary['source']}"
        raise ConfigError(f"{where} does not match train_dataset: {difference}; extract it again")
    logger.info("teacher features from %s (teacher %s, %d records, %d without features)", store.directory,
                manifest["teacher"].get("name"), len(store), len(store.missing()))
    return store

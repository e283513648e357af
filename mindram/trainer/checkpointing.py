"""Training checkpoints and the runs that own them: atomic, keep-last-N, exact resume, one run per directory.

A checkpoint is a directory ``checkpoint-<global_step>/`` holding ``train_state.ckpt`` (model
parameters under their own names, optimizer moments, global step, accumulation buffers) and
``trainer_state.json`` (run id, resume settings, epoch, step in epoch, global step, metrics so far, the best
evaluation so far). The
directory is written under a temporary name (``.checkpoint-*``, with the umask's modes like every other
output) and renamed when complete, so a crash never leaves a partial checkpoint that resume could pick up;
temporaries left by a killed save are removed when the next run starts (:func:`remove_stale_temporaries`).
``best/`` (:func:`save_best_model`) is the model of the best evaluation during training, replaced as a whole.

An output directory holds one training run. Each run has an id, stored in every checkpoint; a resumed run
keeps the id of the checkpoint it resumed. ``keep_checkpoint_max`` pruning and ``"latest"`` only ever look
at the checkpoints of one run, so a checkpoint of another run is never deleted or resumed by accident.
:func:`previous_run_artefacts` names what a new run would overwrite; the trainer refuses to start over it
(:class:`OutputExistsError`) unless ``overwrite_output_dir``, which deletes it first
(:func:`remove_previous_run`).
"""
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import mindspore as ms
import numpy as np

from ..errors import CheckpointError, ConfigError, OutputExistsError
from ..models.modeling_utils import checkpoint_array, read_checkpoint, write_checkpoint
from ..utils.io import atomic_write
from ..utils.mappings import flatten

logger = logging.getLogger(__name__)
_PATTERN = re.compile(r"^checkpoint-(\d+)$")
_TEMPORARY_PREFIX = ".checkpoint-"
TRAIN_LOG = "train_log.jsonl"
BEST = "best"
BEST_METRICS = "best_metrics.json"
_OLD_BEST = f"{_TEMPORARY_PREFIX}old-best-"
_RUN_FILES = ("final", BEST, TRAIN_LOG)   # besides checkpoint-*/ and *_metrics.json


def new_run_id():
    """A fresh run id: start time and a random suffix, e.g. ``20240101-120000-3f2a9c``."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def read_trainer_state(path):
    """The ``trainer_state.json`` of checkpoint directory ``path`` as a dict."""
    file = Path(path) / "trainer_state.json"
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{file}: cannot read the trainer state ({e}); the checkpoint is damaged") from e


def _checkpoints(output_dir):
    """``(global_step, path)`` of every complete checkpoint directory in ``output_dir``, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in output_dir.iterdir() for m in [_PATTERN.match(p.name)]
                  if m and (p / "trainer_state.json").is_file())


def list_checkpoints(output_dir, run_id=None):
    """Complete checkpoint directories in ``output_dir``, oldest first; only run ``run_id``'s when given."""
    return [p for _, p in _checkpoints(output_dir)
            if run_id is None or read_trainer_state(p).get("run_id") == run_id]


def save_checkpoint(output_dir, train_cell, state, keep_last=3, config=None, flat=()):
    """Write ``checkpoint-<state['global_step']>`` atomically; keep the ``keep_last`` newest of its run.

    ``flat``: names of parameters written in their checkpoint layout (the model's ``flat_checkpoint_parameters``),
    as ``save_pretrained`` writes them, so that every checkpoint of a model stores the same shapes.

    The run is ``state['run_id']`` (all checkpoints of ``output_dir`` when it has none). A checkpoint of
    the same step written by another run is never replaced: :class:`OutputExistsError`.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_dir / f"checkpoint-{state['global_step']}"
    run_id = state.get("run_id")
    if (final / "trainer_state.json").is_file() and read_trainer_state(final).get("run_id") != run_id:
        raise OutputExistsError(f"{final}: holds a checkpoint of run {read_trainer_state(final).get('run_id')!r}, "
                                f"not of this run {run_id!r}; train into another output_dir")
    tmp = output_dir / f"{_TEMPORARY_PREFIX}{state['global_step']}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()  # not mkdtemp: that makes it 0700 whatever the umask
    try:
        params = {}
        for param in train_cell.get_parameters():
            params.setdefault(param.name, param)
        flat = set(flat)
        write_checkpoint({k: ms.Tensor(checkpoint_array(k, v.asnumpy(), flat)) for k, v in params.items()},
                         tmp / "train_state.ckpt")
        if config is not None:
            config.save(tmp / "config.yaml")
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(output_dir, run_id)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    logger.info("saved %s", final)
    return final


def resolve_checkpoint(spec, output_dir):
    """``"latest"`` → newest checkpoint in ``output_dir``; else the given directory (validated).

    ``"latest"`` is refused when ``output_dir`` holds checkpoints of several runs (name the directory).
    """
    if spec in (None, False, ""):
        return None
    if spec == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise CheckpointError(f"resume_from_checkpoint='latest' but {output_dir} has no complete checkpoint-* "
                                  f"directory")
        runs = sorted({str(read_trainer_state(p).get("run_id")) for p in found})
        if len(runs) > 1:
            raise CheckpointError(f"resume_from_checkpoint='latest': {output_dir} holds checkpoints of {len(runs)} "
                                  f"runs ({', '.join(runs)}); pass the checkpoint directory to resume instead")
        return found[-1]
    path = Path(spec)
    if not (path / "trainer_state.json").is_file() or not (path / "train_state.ckpt").is_file():
        raise CheckpointError(f"resume_from_checkpoint={spec!r}: expected a directory with trainer_state.json and "
                              f"train_state.ckpt (written by the Trainer)")
    return path


def load_checkpoint(path, train_cell):
    """Restore every parameter of ``train_cell`` from ``path``; return the trainer state dict."""
    path = Path(path)
    params = read_checkpoint(path / "train_state.ckpt")
    own = {}
    for param in train_cell.get_parameters():
        own.setdefault(param.name, param)
    missing = sorted(set(own) - set(params))
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {len(missing)} training parameters, e.g. {missing[:5]} "
                              f"(written by a different model/optimizer configuration?)")
    for name, param in own.items():
        value = params[name].reshape(param.shape) if params[name].size == int(np.prod(param.shape)) else params[name]
        param.set_data(ms.Tensor(value, param.dtype))
    return read_trainer_state(path)


# ---- the run that owns an output directory ----
def previous_run_artefacts(output_dir):
    """What a training run leaves in ``output_dir`` and a new run would overwrite: ``checkpoint-*/``,
    ``final/``, ``best/``, ``train_log.jsonl`` and ``*_metrics.json`` (other files and folders are not a run's)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    return sorted(p for p in output_dir.iterdir()
                  if _PATTERN.match(p.name) or p.name in _RUN_FILES or p.name.endswith("_metrics.json"))


def refuse_previous_run(output_dir):
    """Raise :class:`OutputExistsError` if ``output_dir`` holds a previous run's artefacts."""
    found = previous_run_artefacts(output_dir)
    if found:
        names = ", ".join(p.name for p in found[:5]) + (", ..." if len(found) > 5 else "")
        raise OutputExistsError(
            f"output_dir {output_dir} already holds a previous run ({names}); resume it with --resume_training "
            f"latest (runner_config.resume_from_checkpoint: latest), choose another output_dir, or set "
            f"runner_config.overwrite_output_dir: true (--overwrite_output_dir) to delete it and start over")


def remove_previous_run(output_dir):
    """Delete a previous run's artefacts from ``output_dir`` (``overwrite_output_dir``), logging what went."""
    found = previous_run_artefacts(output_dir)
    if found:
        logger.warning("overwrite_output_dir: deleting the previous run in %s: %s", output_dir,
                       ", ".join(p.name for p in found))
    for path in found:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def remove_stale_temporaries(output_dir):
    """Delete ``.checkpoint-*`` temporaries left in ``output_dir`` by a killed save.

    Call it only when starting the run that owns ``output_dir`` (one trainer per directory): a save in
    progress elsewhere would lose its temporary.
    """
    output_dir = Path(output_dir)
    stale = sorted(p for p in output_dir.glob(f"{_TEMPORARY_PREFIX}*") if p.is_dir()) if output_dir.is_dir() else []
    previous_best = [p for p in stale if p.name.startswith(_OLD_BEST)]
    if previous_best and not (output_dir / BEST).exists():   # killed between the two renames of save_best_model
        logger.info("restoring %s from %s (a replacement of it was interrupted)", BEST, previous_best[0].name)
        os.replace(previous_best[0], output_dir / BEST)
        stale.remove(previous_best[0])
    if stale:
        logger.info("removing %d temporary checkpoint(s) left by an interrupted save: %s", len(stale),
                    ", ".join(p.name for p in stale))
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)


def save_best_model(output_dir, model, record):
    """Make ``output_dir/best/`` the ``save_pretrained`` directory of ``model`` with ``best_metrics.json``
    (``record``: step, metric, value, all metrics, run id), replacing the previous best as a whole.

    The new directory is written under a temporary name and renamed into place; the previous one is renamed
    away first and deleted after, so a reader or a kill sees the old or the new best (a kill between the two
    renames is undone by :func:`remove_stale_temporaries` when the run resumes)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / f"{_TEMPORARY_PREFIX}best-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(tmp)
        (tmp / BEST_METRICS).write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = output_dir / BEST
    previous = output_dir / f"{_OLD_BEST}{uuid.uuid4().hex[:8]}"
    if final.exists():
        os.replace(final, previous)
    os.replace(tmp, final)
    shutil.rmtree(previous, ignore_errors=True)
    logger.info("saved %s (%s %.6g at update %d)", final, record["metric"], record["value"], record["step"])
    return final


def read_best(output_dir):
    """The ``best_metrics.json`` record of ``output_dir/best/``, or None when there is none (or it is unreadable)."""
    file = Path(output_dir) / BEST / BEST_METRICS
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def rewind_run(output_dir, state, discard_later=False):
    """Make ``output_dir`` consistent with resuming run ``state['run_id']`` at ``state['global_step']``.

    The ``train_log.jsonl`` records after that step (and a record torn by a kill) are cut atomically, so that
    no step is logged twice. Checkpoints of the run *after* that step would be replaced by the resumed run:
    they are kept and the resume refused (:class:`OutputExistsError`) unless ``discard_later``
    (``overwrite_output_dir``), which deletes them (logged). ``best/`` stays: it is the model of an evaluation
    this run made, replaced only by a better one (the resumed run adopts it, ``BaseTrainer._resume_best``).
    """
    output_dir, step = Path(output_dir), state["global_step"]
    later = [p for s, p in _checkpoints(output_dir)
             if s > step and read_trainer_state(p).get("run_id") == state["run_id"]]
    if later and not discard_later:
        raise OutputExistsError(f"{output_dir}: resuming at update {step} would replace this run's later "
                                f"checkpoint(s) {', '.join(p.name for p in later)}; resume from the latest one "
                                f"(--resume_training latest), or set runner_config.overwrite_output_dir: true "
                                f"(--overwrite_output_dir) to discard them")
    if later:
        logger.warning("resuming at update %d: deleting this run's later checkpoints %s (overwrite_output_dir)",
                       step, ", ".join(p.name for p in later))
    for path in later:
        shutil.rmtree(path)
    log = output_dir / TRAIN_LOG
    if not log.is_file():
        return
    lines = log.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if _logged_step(line) <= step]
    if len(kept) < len(lines):
        logger.info("resuming at update %d: dropping %d record(s) after it (or torn by the kill) from %s", step,
                    len(lines) - len(kept), log)
        with atomic_write(log, allow_empty=True) as tmp:
            Path(tmp).write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")


def _logged_step(line):
    """The update a ``train_log.jsonl`` line records; infinity for a line a kill left incomplete."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


# ---- settings an exact resume must keep ----
def _flatten(settings):
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``, values normalised as JSON stores them."""
    return flatten(json.loads(json.dumps(settings, sort_keys=True)))


def _differences(saved, current):
    saved, current = _flatten(saved), _flatten(current)
    return [f"{key}: saved {saved.get(key)!r}, now {current.get(key)!r}"
            for key in sorted(set(saved) | set(current)) if saved.get(key) != current.get(key)]


def check_resume_settings(path, saved, current):
    """Compare the settings stored in checkpoint ``path`` with the current run's before resuming.

    Both are ``{"fixed": {...}, "adjustable": {...}}`` (see ``BaseTrainer.resume_settings``). A changed
    *fixed* setting (what decides the data order and the batches) would make the saved position in the data
    mean other samples: :class:`ConfigError` naming every changed key with its saved and new value. A changed
    *adjustable* setting (learning-rate schedule, optimizer hyper-parameters, clipping, loss scale) is applied
    from the resumed step on, with a warning naming it. A checkpoint written before settings were stored
    resumes with a warning that nothing could be checked.
    """
    if saved is None:
        logger.warning("%s stores no training settings (written by an older mindram): cannot check that the "
                       "resumed run uses the same batch size, seed and schedule", path)
        return
    changed = _differences(saved.get("fixed", {}), current["fixed"])
    if changed:
        raise ConfigError(f"cannot resume {path} exactly: {'; '.join(changed)}; resume with the saved values, "
                          f"or to change them start a new run in another output_dir with load_checkpoint: {path}")
    changed = _differences(saved.get("adjustable", {}), current["adjustable"])
    if changed:
        logger.warning("resuming %s with changed settings, applied from its step on (the run is no longer the "
                       "same as an uninterrupted one): %s", path, "; ".join(changed))

"""Training checkpoints: atomic, keep-last-N, exact resume.

A checkpoint is a directory ``checkpoint-<global_step>/`` holding ``train_state.ckpt`` (model
parameters under their own names, optimizer moments, global step, accumulation buffers) and
``trainer_state.json`` (epoch, step in epoch, global step, metrics so far). The directory is
written under a temporary name and renamed when complete, so a crash never leaves a partial
checkpoint that resume could pick up.
"""
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import mindspore as ms
import numpy as np

from ..errors import CheckpointError
from ..models.modeling_utils import read_checkpoint, write_checkpoint

logger = logging.getLogger(__name__)
_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(output_dir):
    """Complete checkpoint directories in ``output_dir``, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() for m in [_PATTERN.match(p.name)]
             if m and (p / "trainer_state.json").is_file()]
    return [p for _, p in sorted(found)]


def save_checkpoint(output_dir, train_cell, state, keep_last=3, config=None):
    """Write ``checkpoint-<state['global_step']>`` atomically and delete all but the ``keep_last`` newest."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_dir / f"checkpoint-{state['global_step']}"
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=output_dir))
    try:
        params = {}
        for param in train_cell.get_parameters():
            params.setdefault(param.name, param)
        write_checkpoint({k: ms.Tensor(v.asnumpy()) for k, v in params.items()}, tmp / "train_state.ckpt")
        if config is not None:
            config.save(tmp / "config.yaml")
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(output_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    logger.info("saved %s", final)
    return final


def resolve_checkpoint(spec, output_dir):
    """``"latest"`` → newest checkpoint in ``output_dir``; else the given directory (validated)."""
    if spec in (None, False, ""):
        return None
    if spec == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise CheckpointError(f"resume_from_checkpoint='latest' but {output_dir} has no complete checkpoint-* "
                                  f"directory")
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
    return json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))

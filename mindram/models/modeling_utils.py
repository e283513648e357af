"""Shared model plumbing: strict checkpoint loading, save/load_pretrained, support lists.

A model family sets ``config_class`` and ``family``; names resolve through :mod:`mindram.catalog`.
Checkpoints are MindSpore ``.ckpt`` (protobuf) or ``.safetensors`` — neither executes code.
"""
import contextlib
import logging
from pathlib import Path

import mindspore as ms
import numpy as np
import safetensors.numpy
from mindspore import Tensor, nn

from .. import catalog
from ..errors import CheckpointError
from ..utils.io import atomic_write

logger = logging.getLogger(__name__)


def _mem_available():
    """Bytes of memory available to a new allocation (MemAvailable: free + reclaimable page cache)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@contextlib.contextmanager
def _page_cache_aware_memory_check():
    """MindSpore 2.10 refuses a ``.ckpt`` larger than ``sysconf(SC_AVPHYS_PAGES)`` — *free* pages only, so
    a machine whose memory sits in the page cache (any machine that has just written big files) is
    reported as out of memory. Use MemAvailable for that check while loading."""
    from mindspore.train import serialization
    original = getattr(serialization, "_get_available_memory", None)
    if original is None or _mem_available() is None:
        yield
        return
    serialization._get_available_memory = _mem_available
    try:
        yield
    finally:
        serialization._get_available_memory = original


def read_checkpoint(path):
    """Read a ``.ckpt`` (MindSpore protobuf) or ``.safetensors`` file into ``{name: np.ndarray}``.

    ``.ckpt`` is one protobuf message (limited to 2 GB and read whole into memory); use
    ``.safetensors`` for ViT-H and larger.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return safetensors.numpy.load_file(str(path))
        with _page_cache_aware_memory_check():
            params = ms.load_checkpoint(str(path))
    except Exception as e:  # mindspore raises ValueError/RuntimeError with little context
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    return {k: v.asnumpy() for k, v in params.items()}


def write_checkpoint(params, path):
    """Write ``{name: np.ndarray | Tensor}`` atomically, as ``.safetensors`` or MindSpore ``.ckpt`` by suffix."""
    path = Path(path)
    with atomic_write(path) as tmp:
        if path.suffix == ".safetensors":
            safetensors.numpy.save_file({k: np.ascontiguousarray(v.asnumpy() if isinstance(v, Tensor) else v)
                                         for k, v in params.items()}, tmp)
        else:
            ms.save_checkpoint([{"name": k, "data": v if isinstance(v, Tensor) else Tensor(np.ascontiguousarray(v))}
                                for k, v in params.items()], tmp)
    return path


def load_state_dict(model, params, strict=True, source="state dict"):
    """Copy ``{name: array}`` into ``model``'s parameters, checking names, shapes and completeness.

    Returns ``(missing, unexpected)``. With ``strict`` any missing/unexpected key or shape mismatch
    raises :class:`CheckpointError` listing them all.
    """
    own = {p.name: p for p in model.get_parameters()}
    # scalars: torch stores 0-d tensors, MindSpore keeps them as (1,) (e.g. CLIP's logit_scale)
    params = {k: (np.reshape(v, own[k].shape) if k in own and np.size(v) == 1 and int(np.prod(own[k].shape)) == 1
                  else v) for k, v in params.items()}
    missing = sorted(set(own) - set(params))
    unexpected = sorted(set(params) - set(own))
    mismatched = [f"{k}: checkpoint {tuple(np.shape(params[k]))} vs model {tuple(own[k].shape)}"
                  for k in sorted(set(own) & set(params)) if tuple(np.shape(params[k])) != tuple(own[k].shape)]
    if mismatched or (strict and (missing or unexpected)):
        raise CheckpointError(
            f"{source} does not match {type(model).__name__}: {len(missing)} missing {missing[:10]}, "
            f"{len(unexpected)} unexpected {unexpected[:10]}, {len(mismatched)} shape mismatches {mismatched[:10]}")
    for name, param in own.items():
        if name in params:
            value = np.asarray(params[name])
            param.set_data(Tensor(value, dtype=param.dtype))
    if missing or unexpected:
        logger.warning("%s: %d missing keys %s, %d unexpected keys %s", source, len(missing), missing[:10],
                       len(unexpected), unexpected[:10])
    return missing, unexpected


class PreTrainedModel(nn.Cell):
    """Base of mindram models: ``from_pretrained``, ``save_pretrained``, ``show_support_list``."""

    config_class = None
    family = None

    def __init__(self, config):
        super().__init__()
        self.config = config

    @classmethod
    def show_support_list(cls):
        """Names accepted by ``from_pretrained`` (scanned from the config files, never a hand list)."""
        return catalog.support_list(cls.family)

    def state_dict(self):
        """``{name: np.ndarray}`` copies of every parameter."""
        return {p.name: p.asnumpy().copy() for p in self.get_parameters()}  # asnumpy() may share memory

    def load_weights(self, source, strict=True):
        """Load a ``.ckpt``/``.safetensors`` path or a ``{name: array}`` dict into this model."""
        if isinstance(source, dict):
            return load_state_dict(self, source, strict=strict)
        return load_state_dict(self, read_checkpoint(source), strict=strict, source=str(source))

    def save_pretrained(self, directory):
        """Write ``config.yaml`` and ``model.ckpt`` into ``directory`` (atomically each)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_write(directory / "config.yaml") as tmp:
            self.config.save(tmp)
        write_checkpoint(self.state_dict(), directory / "model.ckpt")
        return directory

    @classmethod
    def _config_for_checkpoint(cls, ckpt_path):
        """Config stored beside a checkpoint (``<stem>.yaml``), else inferred from its shapes."""
        sidecar = Path(ckpt_path).with_suffix(".yaml")
        if sidecar.is_file():
            return cls.config_class.from_yaml(sidecar), None
        params = read_checkpoint(ckpt_path)
        return cls.config_from_state_dict(params, source=str(ckpt_path)), params

    @classmethod
    def config_from_state_dict(cls, params, source="state dict"):
        raise CheckpointError(f"{cls.__name__} cannot infer its config from {source}; "
                              f"put a config.yaml beside it")

    @classmethod
    def from_pretrained(cls, name_or_path, **config_overrides):
        """Build and load a model from a supported name, a directory (``config.yaml`` + ``.ckpt``)
        or a ``.ckpt``/``.safetensors`` file (config from ``<stem>.yaml`` or inferred from shapes)."""
        path = Path(str(name_or_path)).expanduser()
        params = None
        if path.is_dir():
            config = cls.config_class.from_pretrained(path)
            ckpts = sorted(path.glob("*.ckpt")) + sorted(path.glob("*.safetensors"))
            if not ckpts:
                raise CheckpointError(f"{path}: no .ckpt or .safetensors file in the directory")
            ckpt = path / "model.ckpt" if (path / "model.ckpt").is_file() else ckpts[0]
        elif path.suffix in (".ckpt", ".safetensors"):
            if not path.is_file():
                raise FileNotFoundError(f"checkpoint not found: {path}")
            config, params = cls._config_for_checkpoint(path)
            ckpt = path
        else:
            record = catalog.resolve(cls.family, str(name_or_path))
            config = cls.config_class.from_pretrained(record.name)
            ckpt = record.checkpoint_path
            if not ckpt.is_file():
                raise record.missing_checkpoint_error()
        if config_overrides:
            config = config.replace(**config_overrides)
        model = cls(config)
        model.load_weights(params if params is not None else ckpt)
        model.set_train(False)
        logger.info("loaded %s from %s", cls.__name__, ckpt)
        return model


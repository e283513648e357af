"""Shared model plumbing: strict checkpoint loading, save/load_pretrained, support lists, and the protocol a
model family implements (:class:`PreTrainedModel`'s class attributes; see ``docs/architecture.md``).

Names resolve through :mod:`mindram.catalog`.
Checkpoints are MindSpore ``.ckpt`` (protobuf) or ``.safetensors`` — neither executes code.
"""
import contextlib
import functools
import logging
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import safetensors.numpy
from mindspore import Tensor, nn

from .. import catalog
from ..errors import CheckpointError
from ..registry import MindFormerModuleType, MindFormerRegister
from ..utils.io import atomic_write
from .pretrained_weights import fetch_checkpoint

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".ckpt", ".safetensors")


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


def check_checkpoint_path(path):
    """``path`` as a :class:`~pathlib.Path` if its suffix is one of :data:`CHECKPOINT_SUFFIXES`, else
    :class:`CheckpointError` (MindSpore would silently append ``.ckpt`` to any other name)."""
    path = Path(path)
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise CheckpointError(f"{path}: a checkpoint file name must end with {' or '.join(CHECKPOINT_SUFFIXES)} "
                              f"(got {path.suffix or 'no suffix'}); e.g. {path.with_suffix('.ckpt')}")
    return path


def _varint(f, end):
    """Read one protobuf varint from ``f`` (not beyond offset ``end``)."""
    value = shift = 0
    while shift < 64 and f.tell() < end:
        byte = f.read(1)[0]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
        shift += 7
    raise ValueError(f"bad varint at offset {f.tell()}")


def _length_delimited(f, end):
    """``(field number, payload end offset)`` of the next length-delimited protobuf field of ``f``."""
    key = _varint(f, end)
    if key & 7 != 2:
        raise ValueError(f"unexpected protobuf wire type {key & 7} at offset {f.tell()}")
    length = _varint(f, end)
    if f.tell() + length > end:
        raise ValueError(f"a field of {length} bytes at offset {f.tell()} runs past the end of the file")
    return key >> 3, f.tell() + length


def _ckpt_names(path):
    """Tensor names of a MindSpore ``.ckpt`` (``Checkpoint { repeated Value value = 1 }``, ``Value { string
    tag = 1; ... }``), read by walking the protobuf framing without loading tensor data."""
    names = []
    end = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, end - 17))
        if f.read(7) == b"crc_num":  # optional trailer of save_checkpoint(crc_check=True)
            end -= 17
        f.seek(0)
        while f.tell() < end:
            field, value_end = _length_delimited(f, end)
            while field == 1 and f.tell() < value_end:
                tag, tag_end = _length_delimited(f, value_end)
                if tag == 1:
                    names.append(f.read(tag_end - f.tell()).decode("utf-8"))
                    break
                f.seek(tag_end)
            f.seek(value_end)
    return names


def checkpoint_names(path):
    """Names of the tensors in a ``.ckpt``/``.safetensors`` file, read from its framing/header only (cheap
    for any size; the whole framing is checked, so a truncated file is an error, as is a file without tensors)."""
    path = check_checkpoint_path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        if path.suffix == ".safetensors":
            with safetensors.safe_open(str(path), framework="numpy") as f:
                names = list(f.keys())
        else:
            names = _ckpt_names(path)
    except Exception as e:  # safetensors raises SafetensorError, the protobuf walk ValueError/IndexError
        raise CheckpointError(f"{path}: not a readable {path.suffix} checkpoint (truncated or corrupt: "
                              f"{type(e).__name__}: {e})") from e
    if not names:
        raise CheckpointError(f"{path}: the checkpoint holds no tensors")
    return names


def read_checkpoint(path):
    """Read a ``.ckpt`` (MindSpore protobuf) or ``.safetensors`` file into ``{name: np.ndarray}``.

    ``.ckpt`` is one protobuf message (limited to 2 GB and read whole into memory); use
    ``.safetensors`` for ViT-H and larger. Any unreadable file is a :class:`CheckpointError` naming it.
    """
    path = check_checkpoint_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".ckpt":
        checkpoint_names(path)  # MindSpore parses garbage into an empty dict or reports an absolute path
    try:
        if path.suffix == ".safetensors":
            params = safetensors.numpy.load_file(str(path))
        else:
            with _page_cache_aware_memory_check():
                params = {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items()}
    except Exception as e:  # mindspore raises ValueError/RuntimeError with little context
        raise CheckpointError(f"{path}: not a readable {path.suffix} checkpoint ({' '.join(str(e).split())})") \
            from e
    if not params:
        raise CheckpointError(f"{path}: the checkpoint holds no tensors")
    return params


def verify_checkpoint(path, expected):
    """Raise :class:`CheckpointError` unless the tensors of checkpoint ``path`` are exactly ``expected``."""
    found = checkpoint_names(path)
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or extra or len(found) != len(expected):
        raise CheckpointError(f"{path}: re-reading the written checkpoint finds {len(found)} tensors, expected "
                              f"{len(expected)} (missing {missing[:10]}, unexpected {extra[:10]})")


def write_checkpoint(params, path):
    """Write ``{name: np.ndarray | Tensor}`` atomically, as ``.safetensors`` or MindSpore ``.ckpt`` by suffix.

    The temporary file is re-read (names only) before it replaces ``path``: a file whose tensors differ
    from ``params`` is never put in place.
    """
    path = check_checkpoint_path(path)
    if not params:
        raise CheckpointError(f"{path}: refusing to write a checkpoint without tensors")
    with atomic_write(path, check=lambda tmp: verify_checkpoint(Path(tmp), params)) as tmp:
        if path.suffix == ".safetensors":
            safetensors.numpy.save_file({k: np.ascontiguousarray(v.asnumpy() if isinstance(v, Tensor) else v)
                                         for k, v in params.items()}, tmp)
        else:
            ms.save_checkpoint([{"name": k, "data": v if isinstance(v, Tensor) else Tensor(np.ascontiguousarray(v))}
                                for k, v in params.items()], tmp)
    return path


def _family_hint(model, names):
    """`` (it looks like a <family> checkpoint)`` when ``names`` hold the ``checkpoint_marker`` of another
    registered model family, else ``""``."""
    for cls in MindFormerRegister.registry.get(MindFormerModuleType.MODELS, {}).values():
        marker, family = getattr(cls, "checkpoint_marker", None), getattr(cls, "family", None)
        if marker and marker in names and family != getattr(model, "family", None):
            return f" (it looks like a {family.upper()} checkpoint)"
    return ""


def flat_shape(shape):
    """``(prod(shape[:-1]), shape[-1])``: how a checkpoint stores a parameter of ``shape`` that the model holds
    with more leading dimensions (see ``PreTrainedModel.flat_checkpoint_parameters``)."""
    return (int(np.prod(shape[:-1])), int(shape[-1])) if len(shape) > 1 else tuple(shape)


def checkpoint_array(name, array, flat):
    """``array`` (parameter ``name``'s values) in its checkpoint layout: flattened by :func:`flat_shape` when
    ``name`` is in ``flat`` (a model's ``flat_checkpoint_parameters``), else unchanged."""
    return array.reshape(flat_shape(array.shape)) if name in flat else array


def load_state_dict(model, params, strict=True, source="state dict"):
    """Copy ``{name: array}`` into ``model``'s parameters, checking names, shapes and completeness.

    Returns ``(missing, unexpected)``. With ``strict`` any missing/unexpected key or shape mismatch
    raises :class:`CheckpointError` listing them all.
    """
    own = {p.name: p for p in model.get_parameters()}
    flat = set(getattr(model, "flat_checkpoint_parameters", ()))

    def layout(name, value):
        """The parameter's shape for a checkpoint array stored in another layout of the same values: a 0-d
        scalar (torch) for a (1,) parameter (e.g. CLIP's logit_scale), or a declared flat array."""
        shape = tuple(own[name].shape)
        if np.size(value) == 1 and int(np.prod(shape)) == 1:
            return np.reshape(value, shape)
        if name in flat and tuple(np.shape(value)) == flat_shape(shape):
            return np.reshape(value, shape)   # a view of a contiguous array: no copy
        return value

    params = {k: layout(k, v) if k in own else v for k, v in params.items()}
    missing = sorted(set(own) - set(params))
    unexpected = sorted(set(params) - set(own))
    mismatched = [f"{k}: checkpoint {tuple(np.shape(params[k]))} vs model {tuple(own[k].shape)}"
                  for k in sorted(set(own) & set(params)) if tuple(np.shape(params[k])) != tuple(own[k].shape)]
    if mismatched or (strict and (missing or unexpected)):
        raise CheckpointError(
            f"{source} does not match {type(model).__name__}{_family_hint(model, params)}: {len(missing)} missing "
            f"{missing[:10]}, {len(unexpected)} unexpected {unexpected[:10]}, {len(mismatched)} shape mismatches "
            f"{mismatched[:10]}")
    for name, param in own.items():
        if name in params:
            value = np.asarray(params[name])
            param.set_data(Tensor(value, dtype=param.dtype))
    if missing or unexpected:
        logger.warning("%s: %d missing keys %s, %d unexpected keys %s", source, len(missing), missing[:10],
                       len(unexpected), unexpected[:10])
    return missing, unexpected


@functools.lru_cache(maxsize=None)
def _shared_tokenizer(tokenizer_class):
    """One default-constructed tokenizer per class (a vocabulary is read once per process)."""
    return tokenizer_class()


class PreTrainedModel(nn.Cell):
    """Base of mindram models: ``from_pretrained``, ``save_pretrained``, ``show_support_list``.

    A model family declares, as class attributes, everything the framework (tasks, Trainer, pipelines) needs
    to know about it; nothing outside the family names it:

    * ``config_class``: its :class:`~mindram.models.configuration_utils.PretrainedConfig` (the run config's
      ``model.model_config`` builds one; its ``family`` and ``checkpoint_name_or_path`` name the weights).
    * ``family``: its catalog folder ``configs/<family>/`` (``model/*.yaml`` architectures,
      ``pretrained.yaml`` weights); names given to ``from_pretrained`` resolve there.
    * ``image_processor_class``: its preprocessing, a
      :class:`~mindram.models.image_processing_utils.BaseImageProcessor`; :attr:`image_processor` builds it for
      this model's config and weights.
    * ``tokenizer_class``: for a model with a text tower, its tokenizer: a class whose default-constructed
      instance is either a callable ``texts -> int32 (N, L)`` or MindFormers' ``tok(texts, max_length=L,
      return_tensors="np") -> {"input_ids": ...}`` (:class:`~mindram.CLIPTokenizer`); None for an image-only
      model. :attr:`tokenizer` is a shared instance.

    * ``checkpoint_marker``: a parameter name only this family's checkpoints hold, so that loading one into
      another family's model says which family it belongs to.
    * ``flat_checkpoint_parameters``: names of parameters the model holds with more leading dimensions than its
      checkpoints (e.g. RAM++'s ``label_embed``, (K, D, E) in memory, (K*D, E) in the reference's checkpoints):
      :meth:`state_dict` writes them flat and loading accepts either layout. Holding the compute layout avoids a
      reshape in the graph, which copies the whole tensor on every call on CPU.

    Register the model (``MODELS``), its config (``CONFIG``), processor (``PROCESSOR``) and tokenizer
    (``TOKENIZER``) with :class:`~mindram.registry.MindFormerRegister` so that run configs can name them.
    """

    config_class = None
    family = None
    image_processor_class = None
    tokenizer_class = None
    checkpoint_marker = None
    flat_checkpoint_parameters = ()

    def __init__(self, config):
        super().__init__()
        self.config = config

    @property
    def image_processor(self):
        """This model's preprocessing (a new ``image_processor_class`` instance): its config's image size and
        the catalog's preprocessing of the weights it was loaded as (``config.checkpoint_name_or_path``)."""
        if self.image_processor_class is None:
            raise TypeError(f"{type(self).__name__} declares no image_processor_class")
        return self.image_processor_class.for_config(self.config)

    @property
    def tokenizer(self):
        """The shared ``tokenizer_class`` instance, or None for a model without a text tower."""
        return None if self.tokenizer_class is None else _shared_tokenizer(self.tokenizer_class)

    @classmethod
    def show_support_list(cls, with_status=False, verbose=True):
        """Names accepted by ``from_pretrained`` (scanned from the config files, never a hand list); with
        ``with_status``, ``{name: True if its converted checkpoint is present locally}``.

        With ``verbose`` (the default, as MindFormers) the list is also shown on stdout in MindFormers' block
        (``- support list of CLIPModel is:`` / ``-    [...]`` / ``- ----``); names match case-insensitively.
        """
        names = catalog.support_list(cls.family, with_status=with_status)
        if verbose:
            sys.stdout.write(f"- support list of {cls.__name__} is:\n-    {list(names)}\n- {'-' * 37}\n")
        return names

    def checkpoint_shapes(self):
        """``{name: shape}`` of every parameter as checkpoints store it (``flat_checkpoint_parameters`` flat)."""
        flat = set(self.flat_checkpoint_parameters)
        return {p.name: flat_shape(p.shape) if p.name in flat else tuple(p.shape) for p in self.get_parameters()}

    def state_dict(self):
        """``{name: np.ndarray}`` copies of every parameter, in the checkpoint layout
        (``flat_checkpoint_parameters`` flattened)."""
        flat = set(self.flat_checkpoint_parameters)
        return {p.name: checkpoint_array(p.name, p.asnumpy(), flat).copy()   # asnumpy() may share memory
                for p in self.get_parameters()}

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

    def export(self, output, formats="both", **options):
        """Write deployable graphs of this model (ONNX and/or MindIR) and an ``export.json`` manifest into
        ``output``; returns the manifest. Options per family, see :mod:`mindram.export` (CLIP: ``towers``,
        ``dynamic_batch``, ``batch_size``, ``text_dtype``)."""
        from ..export import export_model  # pylint: disable=import-outside-toplevel
        return export_model(self, output, formats=formats, **options)

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
        or a ``.ckpt``/``.safetensors`` file (config from ``<stem>.yaml`` or inferred from shapes).

        A name whose checkpoint is not in ``$MINDRAM_HOME`` is downloaded, verified and converted first
        (:mod:`mindram.hub`; ``MINDRAM_OFFLINE=1`` turns that into an error that says what to fetch)."""
        catalog.check_model_path(name_or_path)  # a mistyped path is a missing path, not an unknown name
        path = Path(str(name_or_path)).expanduser()
        params = None
        if path.is_dir():
            config = cls.config_class.from_pretrained(path)
            ckpts = sorted(path.glob("*.ckpt")) + sorted(path.glob("*.safetensors"))
            if not ckpts:
                raise CheckpointError(f"{path}: no .ckpt or .safetensors file in the directory")
            ckpt = path / "model.ckpt" if (path / "model.ckpt").is_file() else ckpts[0]
        elif path.suffix in (".ckpt", ".safetensors"):
            config, params = cls._config_for_checkpoint(path)
            ckpt = path
        else:
            record = catalog.resolve(cls.family, str(name_or_path))
            config = cls.config_class.from_pretrained(record.name)
            ckpt = record.checkpoint_path
            if not ckpt.is_file():
                ckpt = fetch_checkpoint(record)  # downloads, verifies and converts on first use
        if config_overrides:
            config = config.replace(**config_overrides)
        model = cls(config)
        model.load_weights(params if params is not None else ckpt)
        model.set_train(False)
        logger.info("loaded %s from %s", cls.__name__, ckpt)
        return model


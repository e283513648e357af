"""Shared model plumbing: strict checkpoint loading, save/load_pretrained, support lists, and the protocol a
model family implements (:class:`PreTrainedModel`'s class attributes; see ``docs/architecture.md``).

Names resolve through :mod:`mindram.catalog`.
Checkpoints are MindSpore ``.ckpt`` (protobuf) or ``.safetensors`` — neither executes code.
"""
import dataclasses
import functools
import logging
import sys
from pathlib import Path
from typing import Optional

import mindspore as ms
import numpy as np
import safetensors.numpy
from mindspore import Tensor, nn

from .. import catalog
from ..checkpoint import mindspore_ckpt, safetensors_file
from ..errors import CheckpointError
from ..registry import MindFormerModuleType, MindFormerRegister
from ..utils.io import atomic_write
from ..utils.random import no_init_weights
from .pretrained_weights import fetch_checkpoint

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".ckpt", ".safetensors")
def check_checkpoint_path(path):
    """``path`` as a :class:`~pathlib.Path` if its suffix is one of :data:`CHECKPOINT_SUFFIXES`, else
    :class:`CheckpointError` (MindSpore would silently append ``.ckpt`` to any other name)."""
    path = Path(path)
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise CheckpointError(f"{path}: a checkpoint file name must end with {' or '.join(CHECKPOINT_SUFFIXES)} "
                              f"(got {path.suffix or 'no suffix'}); e.g. {path.with_suffix('.ckpt')}")
    return path


FOREIGN_SUFFIXES = (".bin", ".pt", ".pth", ".pdparams")   # PyTorch / Paddle weights: converted once, never loaded


def check_readable_checkpoint(path):
    """:func:`check_checkpoint_path` for a file to read: PyTorch/Paddle weights get the command that converts
    them (renaming one would not make it a MindSpore checkpoint)."""
    path = Path(path)
    if path.suffix.lower() in FOREIGN_SUFFIXES:
        raise CheckpointError(
            f"{path}: PyTorch/Paddle weights ({path.suffix}) are converted once, not loaded: python "
            f"convert_weights/convert_clip.py --torch_path {path} --mindspore_path {path.with_suffix('.ckpt').name} "
            f"(RAM/RAM++: convert_weights/convert_ram.py --torch_path {path} --mindspore_path "
            f"{path.with_suffix('.safetensors').name}), then pass the converted file")
    return check_checkpoint_path(path)


def directory_checkpoint(path, error=CheckpointError):
    """The checkpoint a model directory is loaded from: ``model.ckpt`` if present, else its first ``.ckpt``, else
    its first ``.safetensors``; ``error`` (the caller's exception class) when it holds none."""
    path = Path(path)
    ckpts = sorted(path.glob("*.ckpt")) + sorted(path.glob("*.safetensors"))
    if not ckpts:
        raise error(f"{path}: no .ckpt or .safetensors file in the directory")
    return path / "model.ckpt" if (path / "model.ckpt").is_file() else ckpts[0]


def _checkpoint_error(path, error):
    return CheckpointError(f"{path}: not a readable {path.suffix} checkpoint (truncated or corrupt: "
                           f"{type(error).__name__}: {' '.join(str(error).split())})")


def _read_index(path):
    """The index of checkpoint file ``path`` as its format gives it (``.ckpt``: ``{name: mindspore_ckpt.Entry}``;
    ``.safetensors``: ``{name: (shape, numpy dtype)}``), from its framing/header only; an unreadable or empty file
    is a :class:`CheckpointError`."""
    path = check_readable_checkpoint(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        if path.suffix == ".safetensors":
            with safetensors.safe_open(str(path), framework="numpy") as f:
                index = {}
                for name in f.keys():
                    tensor = f.get_slice(name)
                    index[name] = (tuple(tensor.get_shape()), safetensors_file.numpy_dtype(tensor.get_dtype()))
        else:
            index = mindspore_ckpt.read_index(path)
    except Exception as e:  # safetensors raises SafetensorError, the protobuf walk ValueError/IndexError
        raise _checkpoint_error(path, e) from e
    if not index:
        raise CheckpointError(f"{path}: the checkpoint holds no tensors")
    return index


def checkpoint_index(path):
    """``{name: (shape, numpy dtype)}`` of the tensors in a ``.ckpt``/``.safetensors`` file, in file order, read
    from its framing/header only (cheap for any size; the whole framing is checked, so a truncated file is an
    error, as is a file without tensors)."""
    index = _read_index(path)
    if Path(path).suffix == ".safetensors":
        return index
    return {name: (entry.shape, mindspore_ckpt.dtype_of(entry)) for name, entry in index.items()}


def checkpoint_names(path):
    """Names of the tensors in a ``.ckpt``/``.safetensors`` file (see :func:`checkpoint_index`)."""
    return list(checkpoint_index(path))


def iter_checkpoint(path, names=None):
    """``(name, np.ndarray)`` for each tensor of ``path`` (only those in ``names`` if given), read one at a time:
    loading holds one tensor of the file in memory beside the model, never the whole file."""
    path = check_readable_checkpoint(path)
    index = _read_index(path)   # a damaged framing is an error before anything is yielded
    wanted = [name for name in index if names is None or name in names]
    try:
        if path.suffix == ".safetensors":   # plain reads, not safe_open's mapping (see safetensors_file)
            with open(path, "rb") as f:
                data_start, header = safetensors_file.read_header(f, path)
                for name in wanted:
                    yield name, safetensors_file.read_tensor(f, data_start, header[name])
        else:
            with open(path, "rb") as f:
                for name in wanted:
                    yield name, mindspore_ckpt.read_tensor(f, index[name])
    except (OSError, ValueError) as e:
        raise _checkpoint_error(path, e) from e


def read_checkpoint(path):
    """Read a ``.ckpt`` (MindSpore protobuf) or ``.safetensors`` file into ``{name: np.ndarray}``.

    Any unreadable file is a :class:`CheckpointError` naming it. To load a model, ``load_weights(path)`` streams
    the file instead of holding all of it.
    """
    path = check_readable_checkpoint(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return dict(iter_checkpoint(path))


def shape_placeholders(path):
    """``{name: array}`` of the right shape and dtype for each tensor of ``path`` without reading its values
    (zero-stride views of one element): for code that only looks at shapes, such as ``config_from_state_dict``."""
    return {name: np.broadcast_to(np.zeros((), dtype or np.float32), shape)
            for name, (shape, dtype) in checkpoint_index(path).items()}


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


def _match_parameters(model, shapes, strict, source, ignore_unexpected=False):
    """Check checkpoint tensors ``{name: shape}`` against ``model``'s parameters before anything is copied.

    A checkpoint may hold a parameter in another layout of the same values: a 0-d scalar (torch) for a (1,)
    parameter (e.g. CLIP's logit_scale), or a declared flat array (``flat_checkpoint_parameters``). Returns
    ``(own, missing, unexpected)``; any shape mismatch, and with ``strict`` any missing/unexpected key, raises
    :class:`CheckpointError` listing them all."""
    own = {p.name: p for p in model.get_parameters()}
    flat = set(getattr(model, "flat_checkpoint_parameters", ()))

    def fits(name, shape):
        want = tuple(own[name].shape)
        return shape == want or (int(np.prod(shape)) == 1 == int(np.prod(want))) or \
            (name in flat and shape == flat_shape(want))

    missing = sorted(set(own) - set(shapes))
    unexpected = [] if ignore_unexpected else sorted(set(shapes) - set(own))
    mismatched = [f"{k}: checkpoint {tuple(shapes[k])} vs model {tuple(own[k].shape)}"
                  for k in sorted(set(own) & set(shapes)) if not fits(k, tuple(shapes[k]))]
    if mismatched or (strict and (missing or unexpected)):
        raise CheckpointError(
            f"{source} does not match {type(model).__name__}{_family_hint(model, shapes)}: {len(missing)} missing "
            f"{missing[:10]}, {len(unexpected)} unexpected {unexpected[:10]}, {len(mismatched)} shape mismatches "
            f"{mismatched[:10]}")
    if missing or unexpected:
        logger.warning("%s: %d missing keys %s, %d unexpected keys %s", source, len(missing), missing[:10],
                       len(unexpected), unexpected[:10])
    return own, missing, unexpected


def _assign(param, value):
    """Copy ``value`` (checked by :func:`_match_parameters`) into ``param``, in the parameter's shape and dtype."""
    param.set_data(Tensor(np.reshape(np.asarray(value), tuple(param.shape)), dtype=param.dtype))


def load_state_dict(model, params, strict=True, source="state dict", ignore_unexpected=False):
    """Copy ``{name: array}`` into ``model``'s parameters, checking names, shapes and completeness first.

    Returns ``(missing, unexpected)``. With ``strict`` any missing/unexpected key or shape mismatch
    raises :class:`CheckpointError` listing them all (and nothing is copied); with ``ignore_unexpected`` keys the
    model lacks are skipped silently.
    """
    own, missing, unexpected = _match_parameters(model, {k: np.shape(v) for k, v in params.items()}, strict, source,
                                                 ignore_unexpected=ignore_unexpected)
    for name, param in own.items():
        if name in params:
            _assign(param, params[name])
    return missing, unexpected


def load_checkpoint_file(model, path, strict=True, ignore_unexpected=False):
    """Load checkpoint file ``path`` into ``model`` one tensor at a time (the file is never held whole: peak
    memory is the model plus one tensor). Names and shapes are checked from the file's framing first, as in
    :func:`load_state_dict`; with ``ignore_unexpected`` tensors the model lacks (e.g. the optimizer state of a
    ``train_state.ckpt``) are skipped silently. Returns ``(missing, unexpected)``."""
    index = checkpoint_index(path)
    own, missing, unexpected = _match_parameters(model, {k: shape for k, (shape, _) in index.items()}, strict,
                                                 str(path), ignore_unexpected=ignore_unexpected)
    for name, value in iter_checkpoint(path, names=set(own)):
        _assign(own[name], value)
    return missing, unexpected


@dataclasses.dataclass(frozen=True)
class LocatedWeights:
    """Where the weights of a name or path are (:meth:`PreTrainedModel.locate_weights`) and which architecture
    they declare."""

    file: Path                       # the .ckpt/.safetensors file to load
    config: object = None            # the config the weights declare; None: only their shapes tell
    declared_by: Optional[str] = None  # where ``config`` comes from, in words
    name: Optional[str] = None       # the catalog name, for weights given by name
    arch: Optional[str] = None       # the catalog architecture of ``config``, for weights given by name


def weights_file_in(directory):
    """The checkpoint a model or training directory is started from: ``model.ckpt`` (``save_pretrained``), else
    ``train_state.ckpt`` (a training checkpoint), else :func:`directory_checkpoint`'s choice."""
    directory = Path(directory)
    for name in ("model.ckpt", "train_state.ckpt"):
        if (directory / name).is_file():
            return directory / name
    return directory_checkpoint(directory)


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

    def load_weights(self, source, strict=True, ignore_unexpected=False):
        """Load a ``.ckpt``/``.safetensors`` path (streamed, one tensor at a time) or a ``{name: array}`` dict into
        this model; see :func:`load_checkpoint_file`."""
        if isinstance(source, dict):
            return load_state_dict(self, source, strict=strict, ignore_unexpected=ignore_unexpected)
        return load_checkpoint_file(self, source, strict=strict, ignore_unexpected=ignore_unexpected)

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
            return cls.config_class.from_yaml(sidecar)
        return cls.config_from_state_dict(shape_placeholders(ckpt_path), source=str(ckpt_path))

    @classmethod
    def config_from_state_dict(cls, params, source="state dict"):
        """The config of weights ``params`` ``{name: array}``, read from their names and shapes only (loading a
        file passes :func:`shape_placeholders`, whose values are not the weights)."""
        raise CheckpointError(f"{cls.__name__} cannot infer its config from {source}; "
                              f"put a config.yaml beside it")

    @classmethod
    def locate_weights(cls, name_or_path):
        """The :class:`LocatedWeights` of a name (its catalog record: the converted checkpoint in
        ``$MINDRAM_HOME``, downloaded and converted first when missing and fetchable; its architecture file), a
        directory (:func:`weights_file_in`; its ``config.yaml`` when present) or a ``.ckpt``/``.safetensors`` file
        (its ``<stem>.yaml``, as the converters write it, when present). A name whose checkpoint is absent and
        cannot be fetched is the record's :class:`CheckpointError` (expected path and convert command)."""
        catalog.check_model_path(name_or_path)  # a mistyped path is a missing path, not an unknown name
        path = Path(str(name_or_path)).expanduser()
        if path.is_dir():
            config_file = path / "config.yaml"
            config = cls.config_class.from_pretrained(path) if config_file.is_file() else None
            return LocatedWeights(file=weights_file_in(path), config=config,
                                  declared_by=str(config_file) if config is not None else None)
        if path.suffix in CHECKPOINT_SUFFIXES:
            sidecar = path.with_suffix(".yaml")
            config = cls.config_class.from_yaml(sidecar) if sidecar.is_file() else None
            return LocatedWeights(file=path, config=config, declared_by=str(sidecar) if config is not None else None)
        record = catalog.resolve(cls.family, str(name_or_path))
        config = cls.config_class.from_pretrained(record.name)
        file = record.checkpoint_path if record.checkpoint_path.is_file() else fetch_checkpoint(record)
        return LocatedWeights(file=Path(file), config=config, name=record.name, arch=record.arch,
                              declared_by=f"catalog record {record.name}")

    @classmethod
    def from_pretrained(cls, name_or_path, **config_overrides):
        """Build and load a model from a supported name, a directory (``config.yaml`` + ``.ckpt``)
        or a ``.ckpt``/``.safetensors`` file (config from ``<stem>.yaml`` or inferred from shapes).

        A name whose checkpoint is not in ``$MINDRAM_HOME`` is downloaded, verified and converted first
        (:mod:`mindram.hub`; ``MINDRAM_OFFLINE=1`` turns that into an error that says what to fetch)."""
        weights = cls.locate_weights(name_or_path)  # a name: downloaded, verified and converted on first use
        config, ckpt = weights.config, weights.file
        if config is None:   # a directory needs its config.yaml; a bare file: inferred from its shapes
            path = Path(str(name_or_path)).expanduser()
            config = cls.config_class.from_pretrained(path) if path.is_dir() else cls._config_for_checkpoint(ckpt)
        if config_overrides:
            config = config.replace(**config_overrides)
        with no_init_weights():   # every parameter is loaded next (strictly): no random values to throw away
            model = cls(config)
        model.load_weights(ckpt)
        model.set_train(False)
        logger.info("loaded %s from %s", cls.__name__, ckpt)
        return model


"""Torch-free, safe reader for PyTorch checkpoints (returns numpy arrays, never imports torch).

Supported formats (detected from the file content, not its suffix):

* ``torch.save`` zip archives (torch >= 1.6; ``.pt/.pth/.bin``): ``<prefix>/data.pkl`` + ``data/<key>``;
* TorchScript archives (``torch.jit.save``, e.g. OpenAI's ``ViT-B-32.pt``): ``__torch__.*`` objects become
  inert :class:`ScriptObject` placeholders; nothing from ``code/`` is executed (only its
  ``__parameters__``/``__buffers__`` declarations are read as text);
* legacy ``torch.save`` files (torch < 1.6, ``_use_new_zipfile_serialization=False``);
* ``.safetensors`` files (header parsed here, bf16 supported).

Pickles are read with a restricted unpickler: ``find_class`` (the only way a pickle obtains a global, also
for ``STACK_GLOBAL``/``INST``/``EXT*``) returns reader-internal stand-ins for the tensor/storage rebuild
functions, ``collections.OrderedDict``, storage types and dtypes, and raises
:class:`~mindram.errors.UnsafeCheckpointError` for anything else, without importing or calling it.
bfloat16 tensors are returned as float32; every other dtype is kept (float16 stays float16).
"""
from __future__ import annotations

import collections
import errno
import io
import logging
import math
import os
import pickle
import re
import struct
import zipfile
import zlib
from typing import Any, Callable

import numpy as np

from mindram.checkpoint import limits, safetensors_file
from mindram.errors import CheckpointError, MindramError, UnsafeCheckpointError
from mindram.utils.safe_pickle import pickle_hazard

__all__ = ["load_torch_object", "load_torch_state_dict", "load_safetensors", "script_state_dict", "ScriptObject"]

logger = logging.getLogger(__name__)

ACCEPTED_FORMATS = ("torch.save zip archive (torch>=1.6)", "TorchScript archive (torch.jit.save)",
                    "legacy torch.save file (torch<1.6)", "safetensors")
_LEGACY_MAGIC, _LEGACY_PROTOCOL = 0x1950A86A20F9469CFC6C, 1001
# numpy dtype of a storage element; bfloat16 storages hold the raw uint16 bits until conversion.
_NP_DTYPES = {"float32": "f4", "float64": "f8", "float16": "f2", "bfloat16": "u2", "int64": "i8", "int32": "i4",
              "int16": "i2", "int8": "i1", "uint8": "u1", "uint16": "u2", "uint32": "u4", "uint64": "u8",
              "bool": "?", "complex64": "c8", "complex128": "c16"}
_STORAGE_TYPES = {"FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
                  "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
                  "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
                  "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128"}


class _Refused(Exception):
    """Internal: the pickle asked for something unsafe (re-raised as UnsafeCheckpointError with the path)."""


class _Frozen:
    """Reader-internal object handed to the pickle; refuses BUILD so a pickle cannot alter it."""
    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise _Refused(f"pickle tried to set the state of reader-internal object {type(self).__name__}")


class _Marker(_Frozen):
    """Allowed global: ``kind`` is 'dtype' (value: dtype name), 'storage' (value: element dtype name),
    'call' (value: a safe function) or 'type' (inert class marker)."""
    __slots__ = ("kind", "name", "value")

    def __init__(self, kind: str, name: str, value: Any = None) -> None:
        self.kind, self.name, self.value = kind, name, value

    def __call__(self, *args: Any) -> Any:
        if self.kind != "call":
            raise _Refused(f"pickle tried to call {self.kind} {self.name}")
        return self.value(*args)


class _Storage(_Frozen):
    """A storage: 1-D ``data`` array of element dtype ``dtype`` (legacy files fill ``data`` after the pickle)."""
    __slots__ = ("dtype", "data")

    def __init__(self, dtype: str, data: np.ndarray | None = None) -> None:
        self.dtype, self.data = dtype, data

    def array(self) -> np.ndarray:
        if self.data is None:
            raise CheckpointError(f"data of a {self.dtype} storage is missing")
        return self.data


class _Tensor(_Frozen):
    """A tensor awaiting materialisation (legacy files store the data after the pickle)."""
    __slots__ = ("storage", "offset", "size", "stride", "dtype")

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any, dtype: str | None = None) -> None:
        if not isinstance(storage, _Storage):
            raise _Refused(f"tensor rebuilt from {type(storage).__name__}, expected a storage")
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.dtype = dtype or storage.dtype


class ScriptObject:
    """Inert placeholder for a TorchScript ``__torch__.*`` object; records its pickled state, runs nothing.

    Class attributes set per archive from the ``code/`` declarations: ``qualified_name``, ``is_module``,
    ``parameters``, ``buffers`` (``None`` when the class is not declared there).
    """
    qualified_name = "__torch__"
    is_module: bool | None = None
    parameters: list[str] | None = None
    buffers: list[str] | None = None
    state: Any = None
    args: tuple = ()

    def __init__(self, *args: Any, **_: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<ScriptObject {self.qualified_name}>"


def _rebuild_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    if not (isinstance(dtype, _Marker) and dtype.kind == "dtype"):
        raise _Refused(f"_rebuild_tensor_v3 got dtype {type(dtype).__name__}")
    return _Tensor(storage, offset, size, stride, dtype.value)


def _rebuild_from_type_v2(func, new_type, args, state):
    if not (isinstance(func, _Marker) and func.kind == "call"):
        raise _Refused(f"_rebuild_from_type_v2 got function {type(func).__name__}")
    return func(*args)


def _call(name: str, fn: Callable[..., Any]) -> _Marker:
    return _Marker("call", name, fn)


_ALLOWED: dict[tuple[str, str], _Marker] = {
    ("torch._utils", "_rebuild_tensor"): _call("_rebuild_tensor", lambda s, o, size, st: _Tensor(s, o, size, st)),
    ("torch._utils", "_rebuild_tensor_v2"): _call("_rebuild_tensor_v2",
                                                  lambda s, o, size, st, *_: _Tensor(s, o, size, st)),
    ("torch._utils", "_rebuild_tensor_v3"): _call("_rebuild_tensor_v3", _rebuild_v3),
    ("torch._utils", "_rebuild_parameter"): _call("_rebuild_parameter", lambda data, *_: data),
    ("torch._utils", "_rebuild_parameter_with_state"): _call("_rebuild_parameter_with_state",
                                                             lambda data, *_: data),
    ("torch._tensor", "_rebuild_from_type_v2"): _call("_rebuild_from_type_v2", _rebuild_from_type_v2),
    ("collections", "OrderedDict"): _call("OrderedDict", collections.OrderedDict),
    ("torch.jit._pickle", "restore_type_tag"): _call("restore_type_tag", lambda value, *_: value),
    ("torch", "Tensor"): _Marker("type", "Tensor"),
    ("torch.nn.parameter", "Parameter"): _Marker("type", "Parameter"),
    ("torch", "UntypedStorage"): _Marker("storage", "UntypedStorage", "uint8"),
    ("torch.storage", "UntypedStorage"): _Marker("storage", "UntypedStorage", "uint8"),
}
_ALLOWED.update({("torch.jit._pickle", f"build_{k}list"): _call(f"build_{k}list", list)
                 for k in ("int", "double", "bool", "tensor")})
_ALLOWED.update({("torch", k): _Marker("storage", k, v) for k, v in _STORAGE_TYPES.items()})
_ALLOWED.update({("torch", k): _Marker("dtype", k, k) for k in _NP_DTYPES})


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose only source of globals is the allow-list (plus TorchScript placeholders)."""

    def __init__(self, file: Any, persistent_load: Callable[[Any], Any], script: dict[str, dict] | None) -> None:
        super().__init__(file, encoding="utf-8")
        self._pload, self._script, self._types = persistent_load, script, {}

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is not None:
            return allowed
        if self._script is not None and (module == "__torch__" or module.startswith("__torch__.")):
            qualified = f"{module}.{name}"
            if qualified not in self._types:
                info = self._script.get(qualified, {})
                self._types[qualified] = type(name, (ScriptObject,), {
                    "qualified_name": qualified, "is_module": info.get("is_module"),
                    "parameters": info.get("parameters"), "buffers": info.get("buffers")})
            return self._types[qualified]
        raise _Refused(f"refused to load global '{module}.{name}' referenced by the checkpoint pickle "
                       "(only tensor/storage rebuild functions are allowed; the file may be malicious)")

    def persistent_load(self, pid: Any) -> Any:
        return self._pload(pid)


def _no_persistent(pid: Any) -> Any:
    raise _Refused(f"unexpected persistent id {limits.shown(pid)}")


def _reason(exc: BaseException) -> str:
    """``Type: message`` of an error of the machinery, on one bounded line (messages may quote file bytes)."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message[:300] + '...' if len(message) > 300 else message}"


def _unpickle(path: str, data: bytes, persistent_load: Callable[[Any], Any] = _no_persistent,
              script: dict[str, dict] | None = None, start: int = 0) -> tuple[Any, int]:
    """``(object, offset after it)`` of the pickle at ``data[start:]``, read by the restricted unpickler once
    :func:`pickle_hazard` finds nothing in it that would crash or exhaust the process."""
    try:
        hazard = pickle_hazard(data, limits.MAX_DEPTH, start)
    except ValueError:   # malformed where the walk stopped: the unpickler reports it, reaching nothing hazardous
        hazard = None
    if hazard:
        raise CheckpointError(f"{path}: refused to unpickle, the checkpoint pickle holds {hazard}")
    file = io.BytesIO(data)
    file.seek(start)
    try:
        return _RestrictedUnpickler(file, persistent_load, script).load(), file.tell()
    except _Refused as exc:
        raise UnsafeCheckpointError(f"{path}: {exc}") from None
    except MindramError:
        raise
    except Exception as exc:  # malformed pickle: any error of the pickle machinery
        raise CheckpointError(f"{path}: malformed checkpoint pickle ({_reason(exc)})") from exc


def _check_pid(pid: Any) -> tuple[str, str, int, Any]:
    """Validate ``('storage', storage_type, key, location, numel[, view])``; return (dtype, key, numel, view)."""
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage" and type(pid[4]) is int
            and pid[4] >= 0 and isinstance(pid[1], _Marker) and pid[1].kind == "storage"
            and isinstance(pid[2], (str, int))):
        raise _Refused(f"unexpected persistent id {limits.shown(pid)}")
    return pid[1].value, str(pid[2]), pid[4], pid[5] if len(pid) == 6 else None


def _read_array(raw: bytes, dtype_name: str, byteorder: str = "little") -> np.ndarray:
    """1-D native-endian array of torch dtype ``dtype_name`` over ``raw`` (bf16: raw uint16 bits)."""
    native = np.dtype(_NP_DTYPES[dtype_name])
    if len(raw) % native.itemsize:
        raise CheckpointError(f"{len(raw)} bytes of data is not a multiple of the {dtype_name} element size")
    data = np.frombuffer(raw, native.newbyteorder("<" if byteorder == "little" else ">"))
    return data.view(native) if data.dtype.isnative else data.astype(native)


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """float32 array from raw bfloat16 bits: they are the upper half of a float32."""
    wide = bits.astype(np.uint32)
    wide <<= np.uint32(16)
    return wide.view(np.float32)


class _Repeats:
    """Bytes the tensors of one file materialise beyond the storages they view (stride-0 views, tensors sharing a
    storage), charged before each copy is made: at most the file's size plus :func:`limits.max_repeated_bytes`."""

    def __init__(self, file_size: int) -> None:
        self.limit = limits.max_repeated_bytes()
        self.allowed, self.used, self.extra = file_size + self.limit, {}, 0

    def charge(self, storage: _Storage, nbytes: int) -> None:
        have = storage.array().nbytes
        before = self.used.get(id(storage), 0)
        self.used[id(storage)] = after = before + nbytes
        self.extra += max(0, after - have) - max(0, before - have)
        if self.extra > self.allowed:
            raise CheckpointError(f"its tensors repeat {self.extra} bytes of their storages (views with stride 0 or "
                                  f"sharing a storage), over the file's size plus {self.limit} bytes (set "
                                  f"${limits.REPEATED_ENV} to raise it for a file you trust)")


def _to_numpy(t: _Tensor, repeats: _Repeats) -> np.ndarray:
    """Contiguous copy of tensor ``t`` (bounds-checked ``as_strided`` over its storage)."""
    base, dtype = t.storage.array(), np.dtype(_NP_DTYPES[t.dtype])
    if base.dtype.itemsize != dtype.itemsize:  # untyped (uint8) storage viewed by _rebuild_tensor_v3
        if base.nbytes % dtype.itemsize:
            raise CheckpointError(f"storage of {base.nbytes} bytes cannot hold {t.dtype} elements")
        base = base.view(dtype)
    size, stride, offset = t.size, t.stride, t.offset
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
            and all(type(v) is int and v >= 0 for v in size + stride + (offset,))):
        raise CheckpointError(f"invalid tensor geometry size={limits.shown(size)} stride={limits.shown(stride)} "
                              f"offset={limits.shown(offset)}")
    if len(size) > 64:
        raise CheckpointError(f"tensor of {len(size)} dimensions (numpy reads at most 64)")
    if 0 in size:
        out = np.empty(size, dtype)
    else:
        if offset + sum((n - 1) * s for n, s in zip(size, stride)) >= base.size:
            raise CheckpointError(f"tensor size={size} stride={stride} offset={offset} exceeds its storage "
                                  f"of {base.size} elements")
        repeats.charge(t.storage, math.prod(size) * dtype.itemsize)
        strides = [s * dtype.itemsize if n > 1 else dtype.itemsize for n, s in zip(size, stride)]
        out = np.lib.stride_tricks.as_strided(base[offset:], shape=size, strides=strides, writeable=False).copy()
    return _bf16_to_f32(out) if t.dtype == "bfloat16" else out


class _Walk:
    """State of one :func:`_materialize` walk: converted objects, visited containers, the repeated-bytes budget."""

    def __init__(self, repeats: _Repeats) -> None:
        self.done: dict[int, Any] = {}
        self.seen: set[int] = set()
        self.repeats = repeats


def _materialize(obj: Any, walk: _Walk, depth: int = 0) -> Any:
    """Replace every pending tensor of the unpickled tree by a numpy array (dicts/lists updated in place)."""
    if id(obj) in walk.done:
        return walk.done[id(obj)]
    if depth > limits.MAX_DEPTH and isinstance(obj, (tuple, dict, list, ScriptObject)):
        raise CheckpointError(f"containers nested deeper than {limits.MAX_DEPTH} levels")
    if isinstance(obj, _Tensor):
        walk.done[id(obj)] = _to_numpy(obj, walk.repeats)
    elif isinstance(obj, tuple):
        walk.done[id(obj)] = tuple(_materialize(v, walk, depth + 1) for v in obj)
    elif isinstance(obj, (dict, list, ScriptObject)) and id(obj) not in walk.seen:
        walk.seen.add(id(obj))
        if isinstance(obj, dict):
            for key in list(obj):
                obj[key] = _materialize(obj[key], walk, depth + 1)
        elif isinstance(obj, list):
            obj[:] = [_materialize(v, walk, depth + 1) for v in obj]
        else:
            obj.state, obj.args = _materialize(obj.state, walk, depth + 1), _materialize(obj.args, walk, depth + 1)
    return walk.done.get(id(obj), obj)


def _finish(path: str, obj: Any) -> Any:
    walk = _Walk(_Repeats(os.path.getsize(path)))
    try:
        return _materialize(obj, walk)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    except (ValueError, TypeError, OverflowError) as exc:   # numpy refusing a geometry the checks let through
        raise CheckpointError(f"{path}: unreadable tensor ({_reason(exc)})") from exc


def _read_member(zf: zipfile.ZipFile, path: str, name: str, size: int | None = None) -> bytes:
    """The bytes of member ``name``: exactly ``size`` when given (what the metadata says it holds: its declared
    size must agree), else at most the metadata limit. The declared size is checked before anything is inflated,
    and inflating is bounded by it (a member that inflates to more or fewer bytes than declared is corrupt)."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise CheckpointError(f"{path}: archive member {name} is missing") from None
    if size is None:
        if info.file_size > (limit := limits.max_metadata_bytes()):
            raise limits.over_metadata_limit(path, f"archive member {name}", info.file_size, limit)
        size = info.file_size
    elif info.file_size != size:
        raise CheckpointError(f"{path}: archive member {name} declares {info.file_size} bytes, its storage "
                              f"needs {size} bytes")
    with zf.open(info) as member:
        data = member.read(size + 1)
    if len(data) != size:
        raise CheckpointError(f"{path}: archive member {name} holds {len(data)} bytes, its entry declares {size}")
    return data


_DECLARATION = re.compile(r"\s+__(parameters|buffers)__ = ")
_NAME_LIST = re.compile(r'\[\s*(?:"[^"\\\n]*"\s*,\s*)*(?:"[^"\\\n]*"\s*)?\]\s*')


def _declared_names(path: str, member: str, number: int, line: str, match: re.Match) -> list[str]:
    """The names of a ``__parameters__``/``__buffers__`` declaration: a bounded, flat list of quoted names only
    (never given to a Python parser)."""
    where = f"{path}: {member} line {number}: __{match[1]}__"
    if len(line) > limits.MAX_DECLARATION_CHARS:
        raise CheckpointError(f"{where} declaration of {len(line)} characters, over the "
                              f"{limits.MAX_DECLARATION_CHARS}-character limit")
    value = line[match.end():]
    if not _NAME_LIST.fullmatch(value):
        raise CheckpointError(f"{where} is not a list of quoted names: {limits.shown(value)}")
    return re.findall(r'"([^"]*)"', value)


def _parse_script_classes(zf: zipfile.ZipFile, path: str, prefix: str) -> dict[str, dict]:
    """Read (as text, never executed) class headers and parameter/buffer lists from ``code/*.py``."""
    classes: dict[str, dict] = {}
    code_dir = prefix + "code/"
    for name in zf.namelist():
        if not (name.startswith(code_dir) and name.endswith(".py")):
            continue
        module, current = name[len(code_dir):-3].replace("/", "."), None
        text = _read_member(zf, path, name).decode("utf-8", "replace")
        for number, line in enumerate(text.splitlines(), 1):
            match = re.match(r"class (\w+)\((\w*)", line)
            if match:
                current = classes[f"{module}.{match[1]}"] = {"is_module": match[2] == "Module"}
            elif current is not None and (match := _DECLARATION.match(line)):
                current[match[1]] = _declared_names(path, name, number, line, match)
    return classes


def _load_zip(path: str) -> Any:
    """Load a ``torch.save`` zip archive or a TorchScript archive."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            pickles = sorted((n for n in names if n.split("/")[-1] == "data.pkl" and n.count("/") <= 1), key=len)
            if not pickles:
                raise CheckpointError(f"{path}: zip archive without data.pkl is not a torch checkpoint "
                                      f"(accepted formats: {', '.join(ACCEPTED_FORMATS)})")
            prefix = pickles[0][:-len("data.pkl")]
            byteorder = "little"
            if prefix + "byteorder" in names:
                byteorder = _read_member(zf, path, prefix + "byteorder").decode("ascii", "replace").strip()
                if byteorder not in ("little", "big"):
                    raise CheckpointError(f"{path}: unknown byteorder record {limits.shown(byteorder)}")
            is_script = prefix + "constants.pkl" in names or any(n.startswith(prefix + "code/") for n in names)
            storages: dict[str, _Storage] = {}

            def persistent_load(pid: Any) -> _Storage:
                dtype, key, numel, _view = _check_pid(pid)
                if key not in storages:
                    nbytes = numel * np.dtype(_NP_DTYPES[dtype]).itemsize
                    data = _read_array(_read_member(zf, path, f"{prefix}data/{key}", nbytes), dtype, byteorder)
                    storages[key] = _Storage(dtype, data)
                return storages[key]

            script = _parse_script_classes(zf, path, prefix) if is_script else None
            obj, _ = _unpickle(path, _read_member(zf, path, pickles[0]), persistent_load, script)
            logger.debug("%s: %s archive, %d storages", path, "TorchScript" if is_script else "torch.save",
                         len(storages))
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError, NotImplementedError, ValueError, RuntimeError,
            OSError) as exc:
        if isinstance(exc, MindramError) or (isinstance(exc, OSError) and exc.errno != errno.EINVAL):
            raise  # EINVAL: a seek to a negative offset read from a corrupt directory; other OS errors are real
        raise CheckpointError(f"{path}: corrupt or truncated zip archive ({_reason(exc)})") from exc
    return _finish(path, obj)


def _legacy_pickles(path: str, f: Any, persistent_load: Callable[[Any], Any]) -> tuple[Any, Any, list]:
    """``(sys info, object, storage keys)`` of a legacy file after its magic and protocol records; the five pickles
    are read from the file's first :func:`limits.max_metadata_bytes` bytes, and ``f`` is left where they end."""
    limit = limits.max_metadata_bytes()
    raw, end = f.read(limit), 0

    def load(loader: Callable[[Any], Any] = _no_persistent) -> Any:
        nonlocal end
        try:
            obj, end = _unpickle(path, raw, loader, start=end)
            return obj
        except CheckpointError as exc:
            truncated = isinstance(exc.__cause__, EOFError) or "truncated" in str(exc)
            if len(raw) == limit and truncated and os.fstat(f.fileno()).st_size > limit:   # ran into the bound
                raise limits.over_metadata_limit(path, "the legacy pickles", f"more than {limit}", limit) from None
            raise

    if load() != _LEGACY_MAGIC:
        raise CheckpointError(f"{path}: pickle file is not a torch checkpoint "
                              f"(accepted formats: {', '.join(ACCEPTED_FORMATS)})")
    if (protocol := load()) != _LEGACY_PROTOCOL:
        raise CheckpointError(f"{path}: unsupported legacy protocol version {limits.shown(protocol)}")
    sys_info, obj, keys = load(), load(persistent_load), load()
    f.seek(end)
    return sys_info, obj, keys


def _load_legacy(path: str) -> Any:
    """Load a legacy (pre-1.6) ``torch.save`` file: magic, protocol, sys info, object, keys, raw storages."""
    storages: dict[str, _Storage] = {}

    def persistent_load(pid: Any) -> _Storage:
        dtype, key, _numel, view = _check_pid(pid)
        if view is not None:
            raise CheckpointError(f"{path}: storage views (torch<0.4 files) are not supported")
        return storages.setdefault(key, _Storage(dtype))

    with open(path, "rb") as f:
        sys_info, obj, keys = _legacy_pickles(path, f, persistent_load)
        big = isinstance(sys_info, dict) and not sys_info.get("little_endian", True)
        if not isinstance(keys, list):
            raise CheckpointError(f"{path}: malformed legacy checkpoint (storage key list missing)")
        size = os.fstat(f.fileno()).st_size
        for key in keys:
            storage = storages.get(str(key)) if isinstance(key, (str, int)) else None
            if storage is None:
                raise CheckpointError(f"{path}: legacy checkpoint lists unknown storage {limits.shown(key)}")
            head, itemsize, name = f.read(8), np.dtype(_NP_DTYPES[storage.dtype]).itemsize, limits.shown(key)
            if len(head) != 8:
                raise CheckpointError(f"{path}: truncated legacy checkpoint (storage {name} has no length record)")
            numel = struct.unpack(">q" if big else "<q", head)[0]
            left = size - f.tell()
            if not 0 <= numel * itemsize <= left:
                raise CheckpointError(f"{path}: legacy storage {name} declares {numel} {storage.dtype} elements "
                                      f"({numel * itemsize} bytes), but {left} bytes follow in the file")
            raw = f.read(numel * itemsize)
            if len(raw) != numel * itemsize:
                raise CheckpointError(f"{path}: truncated legacy checkpoint (storage {name})")
            storage.data = _read_array(raw, storage.dtype, "big" if big else "little")
    return _finish(path, obj)


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``.safetensors`` file (8-byte LE header length, JSON header, raw data); bf16 -> float32."""
    return safetensors_file.load(path)


def _sniff(path: str) -> str | None:
    """Guess the checkpoint format from the first bytes of ``path``."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04" or zipfile.is_zipfile(path):
        return "zip"
    if head[:1] == b"\x80":
        return "legacy"
    return "safetensors" if head[8:9] == b"{" else None


def load_torch_object(path: str | os.PathLike) -> Any:
    """Load the whole object tree of a checkpoint, tensors converted to numpy arrays.

    Returns dicts/lists/tuples/scalars as pickled, a :class:`ScriptObject` tree for TorchScript archives,
    or a flat dict for safetensors. Raises FileNotFoundError, :class:`CheckpointError` (unknown, corrupt
    or malformed file) or :class:`UnsafeCheckpointError` (the pickle references a non-allowed global).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "checkpoint file not found", path)
    fmt = _sniff(path)
    logger.debug("%s: detected format %s", path, fmt)
    if fmt == "zip":
        return _load_zip(path)
    if fmt == "legacy":
        return _load_legacy(path)
    if fmt == "safetensors":
        return load_safetensors(path)
    raise CheckpointError(f"{path}: not a recognised checkpoint format (accepted: {', '.join(ACCEPTED_FORMATS)})")


def script_state_dict(module: ScriptObject, prefix: str = "") -> dict[str, np.ndarray]:
    """Flatten a TorchScript module tree like ``torch.jit.load(path).state_dict()``.

    Per module: declared parameters, then buffers (every tensor attribute if the class is undeclared), then
    submodules, recursively with dotted prefixes. Non-tensor attributes (ints, bools) are never included.
    A module that contains itself, a tree nested deeper than ``limits.MAX_DEPTH`` modules or one with over
    ``limits.MAX_SCRIPT_MODULES`` module paths (shared submodules count once per path) is a CheckpointError.
    """
    out: dict[str, np.ndarray] = {}
    _flatten_script(module, prefix, (), [0], out)
    return out


def _flatten_script(module: ScriptObject, prefix: str, within: tuple[int, ...], visits: list[int],
                    out: dict[str, np.ndarray]) -> None:
    visits[0] += 1
    if id(module) in within or len(within) > limits.MAX_DEPTH or visits[0] > limits.MAX_SCRIPT_MODULES:
        problem = ("contains itself" if id(module) in within else
                   f"is nested deeper than {limits.MAX_DEPTH} modules" if len(within) > limits.MAX_DEPTH else
                   f"is one of over {limits.MAX_SCRIPT_MODULES} module paths")
        raise CheckpointError(f"TorchScript module {limits.shown(prefix[:-1])} {problem}")
    state = module.state if isinstance(module.state, dict) else {}
    names = list(state) if module.parameters is None else module.parameters + (module.buffers or [])
    out.update({f"{prefix}{name}": state[name] for name in names if isinstance(state.get(name), np.ndarray)})
    for name, value in state.items():
        if isinstance(value, ScriptObject) and value.is_module is not False:
            _flatten_script(value, f"{prefix}{name}.", within + (id(module),), visits, out)


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load a checkpoint of any accepted format as a flat ``{name: np.ndarray}`` state dict.

    TorchScript archives are flattened with :func:`script_state_dict`; wrapper dicts are unwrapped through
    ``state_dict``/``model``/``module`` keys; only array values are kept; a ``module.`` prefix shared by
    every key is stripped. Raises :class:`CheckpointError` when no tensors are found.
    """
    path = os.fspath(path)
    obj = load_torch_object(path)
    if isinstance(obj, ScriptObject):
        try:
            tensors = script_state_dict(obj)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
    else:
        for _ in range(8):
            inner = next((obj[k] for k in ("state_dict", "model", "module")
                          if isinstance(obj, dict) and isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
        items = obj.items() if isinstance(obj, dict) else ()
        tensors = {str(k): v for k, v in items if isinstance(v, np.ndarray) and isinstance(k, (str, int))}
    if not tensors:
        raise CheckpointError(f"{path}: no tensors found (top-level object: {type(obj).__name__})")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    logger.info("%s: loaded %d tensors", path, len(tensors))
    return tensors

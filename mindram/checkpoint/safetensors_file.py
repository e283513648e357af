"""Reading a ``.safetensors`` file one tensor at a time with plain reads (the format: an 8-byte little-endian header
length, a JSON header ``{name: {dtype, shape, data_offsets}}``, then the data).

``safetensors.safe_open`` maps the file: every tensor read through the mapping stays resident, counted in the
process's RSS, until the file is closed, so streaming a checkpoint into a model peaked at the model plus the whole
file (RAM++ Swin-L: 3.19 GB for a 1.87 GB model). Here each tensor is read into its own array, freed once used.
Both checkpoint loading (:func:`mindram.models.modeling_utils.iter_checkpoint`) and the weight converters
(:func:`mindram.checkpoint.load_safetensors`) read through this module.
"""
import json
import math
import os

import numpy as np

from mindram.checkpoint import limits
from mindram.errors import CheckpointError
from mindram.utils.validation import is_int

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64,
          "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32,
          "U64": np.uint64, "BOOL": np.bool_}


def numpy_dtype(name):
    """The numpy dtype :func:`read_tensor` returns for safetensors dtype ``name`` (None if unsupported)."""
    return np.dtype(np.float32) if name == "BF16" else (np.dtype(DTYPES[name]) if name in DTYPES else None)


def read_header(f, path):
    """``(data_start, {name: entry})`` of the open file ``f`` (``__metadata__`` left out), every entry checked: a
    dict with a supported ``dtype``, a ``shape`` of ints >= 0 and ``data_offsets`` ``[begin, end]`` inside the data,
    ``end - begin`` the tensor's bytes, no two tensors overlapping; the header at most the metadata limit
    (:mod:`mindram.checkpoint.limits`). A one-line :class:`CheckpointError` naming ``path`` (and the tensor)
    otherwise. Entries come back as ``{"dtype": str, "shape": tuple, "data_offsets": (begin, end)}``."""
    size = os.fstat(f.fileno()).st_size
    f.seek(0)
    head = f.read(8)
    length = int.from_bytes(head, "little") if len(head) == 8 else size
    if length > size - 8:
        raise CheckpointError(f"{path}: truncated or invalid safetensors header")
    if length > (limit := limits.max_metadata_bytes()):
        raise limits.over_metadata_limit(path, "the safetensors JSON header", length, limit)
    try:
        header = json.loads(f.read(length))
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: invalid safetensors JSON header ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:200]})") from None
    if not isinstance(header, dict) or not isinstance(header.pop("__metadata__", {}), dict):
        raise CheckpointError(f"{path}: the safetensors header is not a JSON object of tensors (with an optional "
                              f"__metadata__ object)")
    data_size = size - 8 - length
    entries = {name: _check_entry(path, name, entry, data_size) for name, entry in header.items()}
    spans = sorted((entry["data_offsets"], name) for name, entry in entries.items()
                   if entry["data_offsets"][0] != entry["data_offsets"][1])
    for (before, first), (after, second) in zip(spans, spans[1:]):
        if after[0] < before[1]:
            raise CheckpointError(f"{path}: tensors {limits.shown(first)} and {limits.shown(second)} overlap "
                                  f"(data_offsets {list(before)} and {list(after)})")
    return 8 + length, entries


def _check_entry(path, name, entry, data_size):
    where = f"{path}: tensor {limits.shown(name)}"
    if not isinstance(entry, dict):
        raise CheckpointError(f"{where}: expected a dict with dtype, shape and data_offsets, got "
                              f"{type(entry).__name__}")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise CheckpointError(f"{where} has unsupported dtype {limits.shown(dtype)} "
                              f"(supported: {', '.join(DTYPES)})")
    if not isinstance(shape, list) or len(shape) > 64 or not all(is_int(n) and n >= 0 for n in shape):
        raise CheckpointError(f"{where}: shape {limits.shown(shape)} is not a list of at most 64 ints >= 0")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_int(n) for n in offsets)):
        raise CheckpointError(f"{where}: data_offsets {limits.shown(offsets)} is not a list of two ints")
    begin, end = offsets
    nbytes = math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize
    if not 0 <= begin <= end <= data_size or end - begin != nbytes:
        raise CheckpointError(f"{where}: data_offsets {offsets} do not hold its {nbytes} bytes inside the "
                              f"{data_size} bytes of data")
    return {"dtype": dtype, "shape": tuple(shape), "data_offsets": (begin, end)}


def read_tensor(f, data_start, entry):
    """The values of a :func:`read_header` ``entry`` as a new numpy array (bfloat16 widened to float32 exactly)."""
    array = np.empty(entry["shape"], np.dtype(DTYPES[entry["dtype"]]).newbyteorder("<"))
    f.seek(data_start + entry["data_offsets"][0])
    if array.nbytes and f.readinto(memoryview(array.reshape(-1)).cast("B")) != array.nbytes:
        raise CheckpointError(f"{getattr(f, 'name', 'file')}: the file ends inside a tensor")
    array = array.astype(array.dtype.newbyteorder("="), copy=False)
    if entry["dtype"] == "BF16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array


def load(path):
    """``{name: np.ndarray}`` of every tensor of ``path``, in header order."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data_start, header = read_header(f, path)
        return {name: read_tensor(f, data_start, entry) for name, entry in header.items()}

"""Reading a ``.safetensors`` file one tensor at a time with plain reads (the format: an 8-byte little-endian header
length, a JSON header ``{name: {dtype, shape, data_offsets}}``, then the data).

``safetensors.safe_open`` maps the file: every tensor read through the mapping stays resident, counted in the
process's RSS, until the file is closed, so streaming a checkpoint into a model peaked at the model plus the whole
file (RAM++ Swin-L: 3.19 GB for a 1.87 GB model). Here each tensor is read into its own array, freed once used.
Both checkpoint loading (:func:`mindram.models.modeling_utils.iter_checkpoint`) and the weight converters
(:func:`mindram.checkpoint.load_safetensors`) read through this module.
"""
import json
import os

import numpy as np

from mindram.errors import CheckpointError

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64,
          "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32,
          "U64": np.uint64, "BOOL": np.bool_}


def numpy_dtype(name):
    """The numpy dtype :func:`read_tensor` returns for safetensors dtype ``name`` (None if unsupported)."""
    return np.dtype(np.float32) if name == "BF16" else (np.dtype(DTYPES[name]) if name in DTYPES else None)


def read_header(f, path):
    """``(data_start, {name: entry})`` of the open file ``f`` (``__metadata__`` left out), every entry's dtype and
    offsets checked against the file's size: a :class:`CheckpointError` naming ``path`` otherwise."""
    size = os.fstat(f.fileno()).st_size
    f.seek(0)
    head = f.read(8)
    length = int.from_bytes(head, "little") if len(head) == 8 else size
    if length > size - 8:
        raise CheckpointError(f"{path}: truncated or invalid safetensors header")
    try:
        header = json.loads(f.read(length))
    except ValueError as exc:
        raise CheckpointError(f"{path}: invalid safetensors JSON header ({exc})") from exc
    header.pop("__metadata__", None)
    for name, entry in header.items():
        if entry.get("dtype") not in DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {entry.get('dtype')!r} "
                                  f"(supported: {', '.join(DTYPES)})")
        begin, end = entry["data_offsets"]
        nbytes = int(np.prod(entry["shape"], dtype=np.int64)) * np.dtype(DTYPES[entry["dtype"]]).itemsize
        if begin < 0 or end - begin != nbytes or 8 + length + end > size:
            raise CheckpointError(f"{path}: tensor {name!r} has inconsistent offsets {entry['data_offsets']}")
    return 8 + length, header


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

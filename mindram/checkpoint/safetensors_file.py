"""Reading a ``.safetensors`` file one tensor at a time with plain reads.

``safetensors.safe_open`` maps the file: every tensor read stays resident as file-backed pages of the process until
the file is closed, so streaming a checkpoint into a model peaked at the model plus the whole file (RAM++ Swin-L:
3.19 GB for a 1.87 GB model). Here each tensor is read into its own array, which is freed once assigned. The
header layout is the format's (8-byte little-endian header length, a JSON header of ``{name: {dtype, shape,
data_offsets}}``, then the data); callers validate the file with ``safe_open`` first.
"""
import json

import numpy as np

DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I8": np.int8, "U8": np.uint8,
          "I16": np.int16, "U16": np.uint16, "I32": np.int32, "U32": np.uint32, "I64": np.int64,
          "U64": np.uint64, "BOOL": np.bool_, "BF16": np.uint16}


def numpy_dtype(name):
    """The numpy dtype :func:`read_tensor` returns for safetensors dtype ``name`` (None if unsupported)."""
    return np.dtype(np.float32) if name == "BF16" else (np.dtype(DTYPES[name]) if name in DTYPES else None)


def read_header(f):
    """``(data_start, {name: entry})`` of the open file ``f`` (its ``__metadata__`` left out)."""
    f.seek(0)
    size = int.from_bytes(f.read(8), "little")
    header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return 8 + size, header


def read_tensor(f, data_start, entry):
    """The values of header ``entry`` as a new numpy array (bfloat16 widened to float32 exactly)."""
    if entry["dtype"] not in DTYPES:
        raise ValueError(f"unsupported safetensors dtype {entry['dtype']!r}")
    begin, end = entry["data_offsets"]
    array = np.empty(entry["shape"], DTYPES[entry["dtype"]])
    if array.nbytes != end - begin:
        raise ValueError(f"{end - begin} bytes for a {entry['dtype']} tensor of shape {entry['shape']}")
    f.seek(data_start + begin)
    if array.nbytes and f.readinto(memoryview(array.reshape(-1)).cast("B")) != array.nbytes:
        raise ValueError("the file ends inside a tensor")
    if entry["dtype"] == "BF16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array

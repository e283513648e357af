"""Streaming reader of MindSpore ``.ckpt`` files, one tensor at a time.

``mindspore.load_checkpoint`` parses the whole protobuf message into memory and then builds a Parameter per
tensor, so loading a model that way holds its weights three times (the model, the message, the
Parameters). This reader walks the protobuf framing itself and reads only the tensor it is yielding.

The format (``mindspore/train/checkpoint.proto``, proto2)::

    message Checkpoint { message Value { required string tag = 1;
                                         oneof value { TensorProto tensor = 2; MapTensorProto maptensor = 3; } }
                         repeated Value value = 1; }
    message TensorProto { repeated int64 dims = 1; required string tensor_type = 2;
                          required bytes tensor_content = 3; }

``save_checkpoint`` writes a tensor over 512 MiB as several consecutive values with the same tag and dims, each
holding a slice of the content (in order), and ``crc_check=True`` appends ``crc_num`` and 10 bytes. String values
(``append_dict`` metadata, ``tensor_type`` ``str``) are not weights and are left out. Map tensors and encrypted
files are not read. A malformed file is a :class:`~mindram.errors.CheckpointError` (a ``ValueError``);
:mod:`mindram.models.modeling_utils` names the file in it.
"""
import math
from typing import NamedTuple, Tuple

import numpy as np

from mindram.checkpoint import limits
from mindram.errors import CheckpointError


# tensor_type → numpy dtype of its bytes; BFloat16 is widened to float32 (as the PyTorch reader does)
DTYPES = {"Float16": np.float16, "Float32": np.float32, "Float64": np.float64, "BFloat16": np.uint16,
          "Int8": np.int8, "UInt8": np.uint8, "Int16": np.int16, "UInt16": np.uint16, "Int32": np.int32,
          "UInt32": np.uint32, "Int64": np.int64, "UInt64": np.uint64, "Bool": np.bool_}
_CRC_TRAILER = len(b"crc_num") + 10
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


class Entry(NamedTuple):
    """One tensor of a ``.ckpt``: its shape, ``tensor_type`` and the (offset, length) of each content slice."""
    name: str
    shape: Tuple[int, ...]
    tensor_type: str
    slices: Tuple[Tuple[int, int], ...]


def _varint(f, end):
    value = shift = 0
    while shift < 64 and f.tell() < end:
        byte = f.read(1)[0]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
        shift += 7
    raise CheckpointError(f"bad varint at offset {f.tell()}")


def _fields(f, end):
    """``(field number, wire type, value)`` of each field of the message ending at ``end``; a varint's value
    is the integer, a length-delimited field's is ``(offset, length)``. The consumer may move the file while it
    holds a length-delimited field (to read it): resuming seeks past that field."""
    while f.tell() < end:
        key = _varint(f, end)
        wire = key & 7
        if wire == _VARINT:
            yield key >> 3, wire, _varint(f, end)
        elif wire == _BYTES:
            length = _varint(f, end)
            start = f.tell()
            if start + length > end:
                raise CheckpointError(f"a field of {length} bytes at offset {start} runs past the end of its message")
            yield key >> 3, wire, (start, length)
            f.seek(start + length)
        elif wire in (_FIXED64, _FIXED32):
            f.seek(f.tell() + (8 if wire == _FIXED64 else 4))
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire} at offset {f.tell()}")


def _read(f, span):
    f.seek(span[0])
    data = f.read(span[1])
    if len(data) != span[1]:
        raise CheckpointError(f"the file ends inside a field at offset {span[0]}")
    return data


def _tensor_proto(f, span):
    """``(dims, tensor_type, content span)`` of the TensorProto at ``span`` (content not read). Dims are
    varints, so the file is never moved while one is held (see :func:`_fields`)."""
    dims, tensor_type, content = [], None, None
    f.seek(span[0])
    for field, wire, value in _fields(f, span[0] + span[1]):
        if field == 1 and wire == _VARINT:
            dims.append(value if value < 2 ** 63 else value - 2 ** 64)
        elif field == 1 and wire == _BYTES:   # packed dims
            f.seek(value[0])
            while f.tell() < value[0] + value[1]:
                dims.append(_varint(f, value[0] + value[1]))
        elif field == 2 and wire == _BYTES:
            tensor_type = _text(_read(f, value), f"the tensor_type at offset {value[0]}")
        elif field == 3 and wire == _BYTES:
            content = value
    if tensor_type is None or content is None:
        raise CheckpointError(f"a tensor at offset {span[0]} has no tensor_type or tensor_content")
    return dims, tensor_type, content


def _shape(name, dims, tensor_type, nbytes):
    """The tensor's shape from its dims, checked against its content size (``dims == [0]`` with one element's
    bytes is how MindSpore stores a 0-d tensor)."""
    if tensor_type not in DTYPES:
        raise CheckpointError(f"tensor {limits.shown(name)} has type {limits.shown(tensor_type)}; readable types are "
                              f"{sorted(DTYPES)}")
    itemsize = np.dtype(DTYPES[tensor_type]).itemsize
    shape = tuple(int(d) for d in dims)
    if len(shape) > 64 or any(d < 0 for d in shape):
        raise CheckpointError(f"tensor {limits.shown(name)}: dims {limits.shown(list(dims))} are not at most 64 "
                              "sizes >= 0")
    if shape == (0,) and nbytes == itemsize:
        shape = ()
    if math.prod(shape) * itemsize != nbytes:
        raise CheckpointError(f"tensor {limits.shown(name)}: dims {limits.shown(list(dims))} of {tensor_type} need "
                              f"{math.prod(shape) * itemsize} bytes, the file holds {nbytes}")
    return shape


def _text(raw, what):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{what} is not UTF-8 text ({exc})") from None


def read_index(path):
    """``{name: Entry}`` of every tensor in ``path``, in file order, from the framing alone (no tensor data is
    read; the whole framing is walked, so a truncated file is an error). Raises :class:`CheckpointError`."""
    with open(path, "rb") as f:
        end = f.seek(0, 2)
        if end >= _CRC_TRAILER:
            f.seek(end - _CRC_TRAILER)
            if f.read(7) == b"crc_num":
                end -= _CRC_TRAILER
        f.seek(0)
        parts, order = {}, []
        for field, wire, value_span in _fields(f, end):
            if field != 1 or wire != _BYTES:
                raise CheckpointError(f"unexpected field {field} (wire type {wire}) in a Checkpoint message")
            f.seek(value_span[0])   # _fields moves the file back past the value when it resumes
            tag, tensor = None, None
            for vfield, vwire, span in _fields(f, value_span[0] + value_span[1]):
                if vfield == 1 and vwire == _BYTES:
                    tag = _text(_read(f, span), f"the tag at offset {span[0]}")
                elif vfield == 2 and vwire == _BYTES:
                    tensor = span
                elif vfield == 3:
                    raise CheckpointError("map tensors (MapParameter) are not supported")
            if tag is None or tensor is None:
                raise CheckpointError(f"a value at offset {value_span[0]} has no tag or tensor")
            dims, tensor_type, content = _tensor_proto(f, tensor)
            if tensor_type == "str":
                continue
            if order and order[-1] == tag:   # a further slice of the previous tensor
                first = parts[tag]
                if (first[0], first[1]) != (dims, tensor_type):
                    raise CheckpointError(f"tensor {limits.shown(tag)} appears twice with different dims or types")
                first[2].append(content)
            elif tag in parts:
                raise CheckpointError(f"tensor {limits.shown(tag)} appears twice")
            else:
                parts[tag] = (dims, tensor_type, [content])
                order.append(tag)
    return {name: Entry(name, _shape(name, dims, tensor_type, sum(n for _, n in spans)), tensor_type, tuple(spans))
            for name, (dims, tensor_type, spans) in ((n, parts[n]) for n in order)}


def read_tensor(f, entry):
    """The values of ``entry`` (from :func:`read_index`) read from the open file ``f``: a new numpy array."""
    chunks = [_read(f, span) for span in entry.slices]
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    array = np.frombuffer(data, DTYPES[entry.tensor_type]).reshape(entry.shape)
    if entry.tensor_type == "BFloat16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array


def dtype_of(entry):
    """The numpy dtype :func:`read_tensor` returns for ``entry``."""
    return np.dtype(np.float32 if entry.tensor_type == "BFloat16" else DTYPES[entry.tensor_type])

"""Restricted unpickler for dataset files that are pickles (CIFAR-100 python version).

``pickle.load`` on a user file runs whatever the file asks for (``os.system`` and friends). Here the only
way a pickle can obtain a global — ``find_class``, used by GLOBAL, STACK_GLOBAL, INST and EXT* — returns one
of the three numpy objects needed to rebuild an ``ndarray`` (``numpy.core.multiarray._reconstruct``, also
spelt ``numpy._core.multiarray``; ``numpy.ndarray``; ``numpy.dtype``) — all the official Python-2 files need —
or one of two checked stand-ins that files re-written by Python 3 need: ``_codecs.encode`` for latin-1 only
(how protocol <= 2 writes ``bytes``) and ``numpy.core.numeric._frombuffer`` for non-object dtypes (how numpy
writes arrays in protocol 5). Everything else is refused with :class:`UnsafePickleError` *before* anything
is imported or called. Plain containers, str, bytes, ints and floats need no global. Persistent ids are refused too.
:func:`pickle_hazard` walks a pickle's opcodes first (also for the checkpoint reader): a tuple nested so deep that
hashing it would overflow the C stack, or a memo index that makes the unpickler allocate gigabytes, is refused
before anything is built.
"""
import io
import os
import pickle
import pickletools
from typing import Any, Union

import numpy as np

from ..errors import DataError

__all__ = ["UnsafePickleError", "load_restricted_pickle", "pickle_hazard", "ALLOWED_GLOBALS"]


class _Refused(Exception):
    pass


try:  # numpy >= 1.25 exposes the same function under numpy._core as well
    from numpy.core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 2 without the numpy.core shim
    from numpy._core.multiarray import _reconstruct as _np_reconstruct


def _latin1_encode(text: Any, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 uses it in protocol <= 2 pickles to write a ``bytes`` object
    (``_codecs.encode('...', 'latin1')``); any other use (other codecs, non-str input) is refused."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """``numpy.core.numeric._frombuffer``, how numpy writes arrays in protocol-5 pickles; only for plain
    (non-object) dtypes over an in-band bytes buffer."""
    if not isinstance(buf, (bytes, bytearray)) or not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise _Refused(f"numpy.core.numeric._frombuffer({type(buf).__name__}, {dtype!r})")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


# (module, name) -> object. Pickles written by numpy < 2 say numpy.core.multiarray, numpy >= 2 numpy._core.
ALLOWED_GLOBALS = {
    ("_codecs", "encode"): _latin1_encode,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


def _opcode_table():
    """byte -> (name, argument length code, items popped (an int, or ``("mark", below)``), items pushed)."""
    table = {}
    for op in pickletools.opcodes:
        size = op.arg.n if op.arg is not None else 0
        if op.name in ("GLOBAL", "INST"):
            size = "two lines"
        before = op.stack_before
        pops = ("mark", before.index(pickletools.markobject)) if pickletools.markobject in before else len(before)
        table[op.code.encode("latin-1")[0]] = (op.name, size, pops, len(op.stack_after))
    return table


_OPCODES = _opcode_table()
MAX_TUPLE_DEPTH = 200   # tuples nested deeper in a dataset pickle are refused (no real file comes near)
_TUPLE_OPS = {"EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"}
_CALL_OPS = {"REDUCE", "NEWOBJ", "NEWOBJ_EX", "OBJ", "INST", "BUILD"}   # results may hold their arguments
_MEMO_INDEX = {"BINGET", "LONG_BINGET", "BINPUT", "LONG_BINPUT"}
_LENGTH_PREFIX = {pickletools.TAKEN_FROM_ARGUMENT1: (1, False), pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
                  pickletools.TAKEN_FROM_ARGUMENT4U: (4, False), pickletools.TAKEN_FROM_ARGUMENT8U: (8, False)}


class _PastEnd(ValueError):
    """An opcode argument that runs past the end of the pickle data."""


def _argument(data, i, size):
    """``(argument bytes, index after it)`` of the opcode argument at ``data[i:]``."""
    if size == "two lines":
        first = data.index(b"\n", i) + 1
        end = data.index(b"\n", first)
        return data[i:end], end + 1
    if size == pickletools.UP_TO_NEWLINE:
        end = data.index(b"\n", i)
        return data[i:end], end + 1
    if size in _LENGTH_PREFIX:
        width, signed = _LENGTH_PREFIX[size]
        length = int.from_bytes(data[i:i + width], "little", signed=signed)
        if length < 0:
            raise ValueError(f"an argument of {length} bytes at offset {i}")
        if i + width + length > len(data):
            raise _PastEnd(f"an argument of {length} bytes at offset {i}")
        return None, i + width + length
    if i + size > len(data):
        raise ValueError(f"the pickle ends inside an argument at offset {i}")
    return data[i:i + size], i + size


def _memo_index(name, arg):
    if name in _MEMO_INDEX:
        return int.from_bytes(arg, "little")
    text = bytes(arg).strip()
    if not text.isdigit():
        raise ValueError(f"{name} with memo index {text[:20]!r}")
    return int(text)


def pickle_hazard(data, max_depth, start=0):
    """What in the pickle at ``data[start:]`` (bytes) would crash or exhaust the unpickler, found by walking its
    opcodes (nothing is built or imported); ``None`` if nothing. Checked before unpickling: hashing a tuple nested
    ~100k deep (a dict key, a set item) overflows the C stack and kills the process (deep lists and dicts only raise
    RecursionError later), so tuples may nest at most ``max_depth`` deep; ``LONG_BINPUT 4000000000`` makes the C
    unpickler grow its memo table to 32 GB, so a memo index may not exceed the index's offset in the pickle (a
    pickler numbers them from 0 up). Raises ``ValueError`` where the walk cannot go on (the unpickler fails there
    too, having reached nothing hazardous before it). A length-prefixed argument longer than the rest of the data is
    reported too (the unpickler would allocate it before finding the pickle truncated)."""
    stack, marks, memo, i = [], [], {}, start
    while True:
        if i >= len(data):
            raise ValueError("the pickle ends without STOP")
        code = _OPCODES.get(data[i])
        if code is None:
            raise ValueError(f"unknown pickle opcode {data[i]:#04x} at offset {i}")
        name, size, pops, pushes = code
        if not size:
            i += 1
        elif type(size) is int and size > 0 and i + 1 + size <= len(data):
            arg, i = data[i + 1:i + 1 + size], i + 1 + size
        else:
            try:
                arg, i = _argument(data, i + 1, size)
            except _PastEnd as exc:   # the unpickler would allocate it first (gigabytes, for a few bytes of file)
                return f"{exc} past the end of the pickle (truncated)"
            except ValueError as exc:   # data.index found no newline
                raise ValueError(f"{name} argument at offset {i + 1}: {exc}") from None
        if name == "STOP":
            return None
        if name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):   # the top item stays on the stack
            key = len(memo) if name == "MEMOIZE" else _memo_index(name, arg)
            if key > i - start:
                return f"memo index {key} at offset {i - start} (a pickler numbers them from 0 up)"
            memo[key] = stack[-1] if stack else 0
            continue
        if name == "MARK":
            marks.append(len(stack))
            continue
        if isinstance(pops, tuple):
            if not marks:
                raise ValueError(f"{name} at offset {i} without a MARK")
            mark = marks.pop()
            pops = len(stack) - mark + pops[1]
        if pops > len(stack):
            raise ValueError(f"{name} at offset {i} on a stack of {len(stack)} items")
        if pops:
            popped = stack[len(stack) - pops:]
            del stack[len(stack) - pops:]
        else:
            popped = ()
        if name in _TUPLE_OPS:
            height = 1 + max(popped, default=0)
            if height > max_depth:
                return f"tuples nested deeper than {max_depth} levels"
        elif name in _CALL_OPS:
            height = max(popped, default=0)
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            height = memo.get(_memo_index(name, arg), 0)
        elif name == "DUP":
            height = popped[0]
        else:
            height = 0
        stack.extend([height] * pushes)


class UnsafePickleError(DataError):
    """A dataset pickle references a global that is not on the allow-list (the file may be malicious)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        obj = ALLOWED_GLOBALS.get((module, name))
        if obj is None:
            raise _Refused(f"{module}.{name}")
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused(f"persistent id {pid!r}")


def load_restricted_pickle(path: Union[str, os.PathLike], encoding: str = "latin1") -> Any:
    """Load a pickle that may only hold plain containers, str/bytes/numbers and numpy arrays.

    Args:
        path: the pickle file.
        encoding: how Python 2 ``str`` objects are decoded (``'latin1'`` keeps numpy array bytes intact,
            ``'bytes'`` leaves them as bytes).

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafePickleError: the pickle asks for any other global (named in the message); nothing is run.
        DataError: the file is not a readable pickle.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    try:
        hazard = pickle_hazard(raw, MAX_TUPLE_DEPTH)
    except ValueError:   # malformed where the walk stopped: the unpickler reports it, reaching nothing hazardous
        hazard = None
    if hazard:
        raise DataError(f"{path}: refused to unpickle, the pickle holds {hazard}: reading it could crash or exhaust "
                        "the process")
    try:
        return _RestrictedUnpickler(io.BytesIO(raw), encoding=encoding).load()
    except _Refused as e:
        raise UnsafePickleError(
            f"{path}: refused to load global '{e}' referenced by the pickle; only plain containers, "
            "str/bytes/numbers and numpy arrays (numpy.core.multiarray._reconstruct, numpy.ndarray, "
            "numpy.dtype, checked _codecs.encode / _frombuffer) are allowed — the file may be malicious") from None
    except Exception as e:  # any error of the pickle machinery on a malformed file
        raise DataError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e

"""Restricted unpickler for dataset files that are pickles (CIFAR-100 python version).

``pickle.load`` on a user file runs whatever the file asks for (``os.system`` and friends). Here the only
way a pickle can obtain a global — ``find_class``, used by GLOBAL, STACK_GLOBAL, INST and EXT* — returns one
of the three numpy objects needed to rebuild an ``ndarray`` (``numpy.core.multiarray._reconstruct``, also
spelt ``numpy._core.multiarray``; ``numpy.ndarray``; ``numpy.dtype``) — all the official Python-2 files need —
or one of two checked stand-ins that files re-written by Python 3 need: ``_codecs.encode`` for latin-1 only
(how protocol <= 2 writes ``bytes``) and ``numpy.core.numeric._frombuffer`` for non-object dtypes (how numpy
writes arrays in protocol 5). Everything else is refused with :class:`UnsafePickleError` *before* anything
is imported or called. Plain containers, str, bytes, ints and floats need no global. Persistent ids are refused too.
"""
import io
import os
import pickle
from typing import Any, Union

import numpy as np

from ..errors import DataError

__all__ = ["UnsafePickleError", "load_restricted_pickle", "ALLOWED_GLOBALS"]


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
        return _RestrictedUnpickler(io.BytesIO(raw), encoding=encoding).load()
    except _Refused as e:
        raise UnsafePickleError(
            f"{path}: refused to load global '{e}' referenced by the pickle; only plain containers, "
            "str/bytes/numbers and numpy arrays (numpy.core.multiarray._reconstruct, numpy.ndarray, "
            "numpy.dtype, checked _codecs.encode / _frombuffer) are allowed — the file may be malicious") from None
    except Exception as e:  # any error of the pickle machinery on a malformed file
        raise DataError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e

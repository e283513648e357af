"""Bounds on what reading one checkpoint file may cost (docs/limits.md, "Checkpoints and weight files").

Tensor data is never bounded: a reader allocates what the file's metadata says a tensor needs only after checking
that the file (or its zip member) holds exactly those bytes. What is bounded is what metadata may cost to parse
and what a file may make the reader build beyond its own bytes. The two byte limits are read from the environment
on every call, so a user can raise them for a file they trust.
"""
import reprlib

from ..errors import CheckpointError
from ..utils.env import env_number

METADATA_ENV = "MINDRAM_CHECKPOINT_MAX_METADATA_BYTES"
REPEATED_ENV = "MINDRAM_CHECKPOINT_MAX_REPEATED_BYTES"
DEFAULT_METADATA_BYTES = 64 << 20    # a data.pkl, the legacy pickles, one TorchScript code/ file, a safetensors header
DEFAULT_REPEATED_BYTES = 256 << 20   # bytes tensors repeat beyond the file's size (stride-0 views, shared storages)
MAX_DEPTH = 200                      # nesting of containers in a checkpoint pickle (fixed: Python's recursion limit)
MAX_DECLARATION_CHARS = 1 << 20      # one ``__parameters__ = [...]`` line of a TorchScript code/ file (fixed)
MAX_SCRIPT_MODULES = 100_000         # module paths walked to flatten a TorchScript module tree (fixed)


_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 200


def shown(value):
    """How a value read from a file appears in an error message: its repr, at most ~200 characters, nested
    containers elided (a message stays one short line whatever the file holds)."""
    return _SHOWN.repr(value)


def _env_bytes(name, default):
    return env_number(name, default, meaning="bytes")


def max_metadata_bytes():
    """Bytes of metadata (a pickle, a code file, a JSON header) one checkpoint part may hold."""
    return _env_bytes(METADATA_ENV, DEFAULT_METADATA_BYTES)


def max_repeated_bytes():
    """Bytes a checkpoint's tensors may repeat of the storages they view (stride-0 views, tensors sharing a
    storage) beyond the size of the file itself."""
    return _env_bytes(REPEATED_ENV, DEFAULT_REPEATED_BYTES)


def over_metadata_limit(path, what, size, limit):
    """The :class:`CheckpointError` for metadata ``what`` of ``size`` bytes over ``limit``."""
    return CheckpointError(f"{path}: {what} holds {size} bytes, over the {limit}-byte limit for checkpoint metadata "
                           f"(set ${METADATA_ENV} to raise it for a file you trust)")

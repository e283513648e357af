"""MindIR export of one cell with ``mindspore.export``, loadable with ``mindspore.load`` + ``nn.GraphCell``.

mindram's C++ kernels (GELU, LayerNorm, bias add, transpose, fused attention) are ``ops.Custom`` AOT primitives
that name a shared library on this machine; a graph holding them would not run anywhere else. They are switched
off while exporting (:func:`~mindram.layers.kernels.exportable`, the one switch every kernel layer reads), so the
file uses MindSpore's built-in operators only, with a fixed batch as with ``dynamic_batch``; a graph that still
names the library is refused before it is written (:func:`check_portable`).
"""
import functools
import logging
import mmap
import re

import mindspore as ms

from ..errors import ConfigError
from ..layers.kernels import exportable
from ..layers.kernels.build import LIB_NAME
from ..utils.graph import run_in_graph_mode
from ..utils.io import atomic_write

logger = logging.getLogger(__name__)

_DTYPES = {"float32": ms.float32, "int64": ms.int64, "int32": ms.int32}


def check_portable(graph_file, path=None):
    """Raise :class:`ConfigError` when the MindIR file ``graph_file`` names mindram's kernel library (an
    ``ops.Custom`` op that runs only where that library is); ``path`` is the name reported (default: the file)."""
    with open(graph_file, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data.find(LIB_NAME.encode()) < 0:
            return
        ops = sorted({m.group(1).decode() for m in re.finditer(re.escape(LIB_NAME.encode()) + rb":(\w+)", data)})
    raise ConfigError(f"{path or graph_file}: the exported graph still holds mindram's C++ kernel op(s) "
                      f"{', '.join(ops) or LIB_NAME}, which run only on this machine; not written (a kernel layer "
                      f"that bypasses mindram.layers.kernels.kernel_input)")


def input_placeholder(shape, dtype):
    """The example input ``mindspore.export`` traces: a shape-only tensor when a dimension is None (dynamic)."""
    if any(d is None for d in shape):
        return ms.Tensor(shape=list(shape), dtype=_DTYPES[dtype])
    return ms.ops.zeros(tuple(shape), _DTYPES[dtype])


def export_mindir(cell, inputs, path):
    """Write ``cell`` traced on ``inputs`` (a list of ``(shape, dtype)``; None = dynamic dim) to ``path``."""
    placeholders = [input_placeholder(shape, dtype) for shape, dtype in inputs]
    with exportable(), atomic_write(path, check=functools.partial(check_portable, path=path)) as tmp:
        run_in_graph_mode(functools.partial(ms.export, file_name=tmp, file_format="MINDIR"), cell, *placeholders)
    logger.info("wrote %s", path)
    return path


def load_mindir(path):
    """An ``nn.GraphCell`` running the MindIR file ``path``."""
    return ms.nn.GraphCell(ms.load(str(path)))

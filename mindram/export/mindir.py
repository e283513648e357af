"""MindIR export of one cell with ``mindspore.export``, loadable with ``mindspore.load`` + ``nn.GraphCell``.

mindram's C++ kernels (exact GELU, LayerNorm) are ``ops.Custom`` AOT primitives that name a shared library
on this machine; a graph holding them would not run anywhere else. They are switched off while exporting
(:func:`portable_layers`), so the file uses MindSpore's built-in operators only.
"""
import contextlib
import functools
import logging

import mindspore as ms

from ..utils.graph import run_in_graph_mode
from ..utils.io import atomic_write

logger = logging.getLogger(__name__)

_DTYPES = {"float32": ms.float32, "int64": ms.int64, "int32": ms.int32}


@contextlib.contextmanager
def portable_layers(cell):
    """Within the block, every layer of ``cell`` with a C++ kernel uses MindSpore's built-in ops instead."""
    switched = [c for _, c in cell.cells_and_names() if getattr(c, "use_kernel", False)]
    for c in switched:
        c.use_kernel = False
    try:
        yield cell
    finally:
        for c in switched:
            c.use_kernel = True


def input_placeholder(shape, dtype):
    """The example input ``mindspore.export`` traces: a shape-only tensor when a dimension is None (dynamic)."""
    if any(d is None for d in shape):
        return ms.Tensor(shape=list(shape), dtype=_DTYPES[dtype])
    return ms.ops.zeros(tuple(shape), _DTYPES[dtype])


def export_mindir(cell, inputs, path):
    """Write ``cell`` traced on ``inputs`` (a list of ``(shape, dtype)``; None = dynamic dim) to ``path``."""
    placeholders = [input_placeholder(shape, dtype) for shape, dtype in inputs]
    with portable_layers(cell), atomic_write(path) as tmp:
        run_in_graph_mode(functools.partial(ms.export, file_name=tmp, file_format="MINDIR"), cell, *placeholders)
    logger.info("wrote %s", path)
    return path


def load_mindir(path):
    """An ``nn.GraphCell`` running the MindIR file ``path``."""
    return ms.nn.GraphCell(ms.load(str(path)))

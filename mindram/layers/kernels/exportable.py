"""The one switch that keeps mindram's C++ kernels out of a graph: :func:`exportable`.

The kernels are ``ops.Custom`` AOT primitives naming a shared library on this machine; a MindIR graph holding
one runs nowhere else. Every layer with a kernel path takes it only when :func:`~.ops.kernel_input` says so, and
:func:`~.ops.kernel_input` is False while an :func:`exportable` block is open, so there is no per-layer flag to
forget. The switch is process-wide (the graphs compiled inside the block, in any thread, use the built-in ops)
and is restored on exit, exceptions included; blocks nest.

A graph compiled inside the block is cached by MindSpore like any other: a cell *run* inside the block (rather than
exported) may keep the built-in ops for that input shape afterwards. Exporting compiles a graph of its own, so
export inside the block and run outside it.
"""
import contextlib
import threading

_LOCK = threading.Lock()
_DEPTH = [0]   # open exportable() blocks in this process


def exporting():
    """True while an :func:`exportable` block is open (read by :func:`~.ops.kernel_input` when a graph is built)."""
    return _DEPTH[0] > 0


@contextlib.contextmanager
def exportable():
    """Within the block, every mindram layer uses MindSpore's built-in ops instead of its C++ kernel."""
    with _LOCK:
        _DEPTH[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            _DEPTH[0] -= 1

"""One side of a benchmark case, in its own process: the worker ``bench_harness.py`` drives over two pipes.

    python bench_worker.py --fds READ_FD WRITE_FD

Plain Python (numpy and the standard library at import time), so that it runs in any interpreter: mindram's,
or the same venv with a reference project's dependencies put first on ``PYTHONPATH``. The parent writes one
JSON request per line to READ_FD and reads one JSON reply per line from WRITE_FD (the worker's stdout and
stderr stay free for the libraries' own output, which the parent keeps in a log file). Requests:

- ``setup``: import ``module`` (a file path) and call ``factory(workdir=..., **kwargs)``, which returns a
  :class:`Workload`; replies with its ``items`` per call, ``framework`` and ``versions``.
- ``output``: save the workload's output for the numerical check (``<workdir>/<side>_output.npy``).
- ``flops``: the FLOPs of one call, when the workload counts them (the reference side does).
- ``run``: ``iters`` calls; replies wall and CPU seconds (``time.process_time``: every thread of this process).
- ``memory``: peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), current RSS, and, split at the end of
  ``setup``, the peak of setup (building the model, loading and converting weights, writing the shared files) and
  the peak while running (the output check's first call, which compiles graphs, the warm-up and the rounds:
  Linux's ``VmHWM`` after resetting it through ``/proc/self/clear_refs``; None where that is not possible), in MiB.
- ``gemm``: GFLOP/s of an ``n``³ float32 matmul in the workload's framework, best of ``repeats``.
- ``quit``.

Every reply has ``ok``; a failure replies ``{"ok": false, "error": "<one line>"}`` and the worker goes on.
"""
import argparse
import importlib.util
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

import numpy as np


class Workload:
    """What a side runs: ``run()`` does one call (and waits for its result); it processes ``items`` units.

    ``output()`` (optional) returns the array compared across sides; ``flops()`` (optional) the FLOPs of one call;
    ``framework``: ``torch``, ``mindspore``, ``onnxruntime`` or ``numpy`` (whose matmul measures the GEMM peak);
    ``versions``: a dict of library versions and settings recorded with the results.
    """

    def __init__(self, run, items, framework, output=None, flops=None, versions=None):
        self.run, self.items, self.framework = run, int(items), framework
        self.output, self.flops, self.versions = output, flops, dict(versions or {})


def run_in_child(module_path, function, *args):
    """``function(*args)`` of the script ``module_path``, run in a child Python process (a worker's setup step
    whose memory is not the workload's: converting or exporting the shared weights). Raises RuntimeError with the
    child's last error line."""
    import subprocess
    here = str(Path(__file__).resolve().parent)
    code = (f"import sys; sys.path[:0] = [{here!r}, {str(Path(here).parent)!r}]; import importlib.util as u; "
            f"s = u.spec_from_file_location('bench_child', {str(module_path)!r}); m = u.module_from_spec(s); "
            f"s.loader.exec_module(m); m.{function}(*{args!r})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(module_path).name}: {function}{args!r} failed: "
                           f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")


def count_torch_flops(fn):
    """FLOPs of ``fn()`` by ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add of matmuls,
    convolutions and attention; elementwise ops are not counted).

    Two gaps of the counter on CPU are closed: ``nn.MultiheadAttention``'s inference fast path (a fused op it does
    not count) is switched off while counting, and the CPU flash-attention kernels of
    ``scaled_dot_product_attention`` (forward and backward) are counted with torch's own SDPA formulas.
    """
    import torch
    from torch.utils import flop_counter

    def forward(query, key, value, *args, **kwargs):
        return flop_counter.sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, **kwargs):
        return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)

    mapping = {}
    for name, formula in [("_scaled_dot_product_flash_attention_for_cpu", forward),
                          ("_scaled_dot_product_flash_attention_for_cpu_backward", backward)]:
        if hasattr(torch.ops.aten, name):
            mapping[getattr(torch.ops.aten, name)] = formula
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with flop_counter.FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return int(counter.get_total_flops())


def _gemm_call(framework, n):
    """A function doing one ``n``³ float32 matmul in ``framework`` and waiting for it."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    if framework == "numpy":
        return lambda: np.matmul(a, b)
    if framework == "torch":
        import torch
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        return lambda: torch.mm(ta, tb)
    if framework == "mindspore":
        import mindspore as ms
        from mindspore import ops
        ma, mb = ms.Tensor(a), ms.Tensor(b)
        return lambda: ops.matmul(ma, mb).asnumpy()
    if framework == "onnxruntime":
        return _onnxruntime_matmul(a, b)
    raise ValueError(f"unknown framework {framework!r}: expected numpy, torch, mindspore or onnxruntime")


def _onnxruntime_matmul(a, b):
    """``a @ b`` as a one-node ONNX graph run by ONNX Runtime's CPU provider (``b`` a constant, as weights are)."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, list(a.shape))],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [a.shape[0], b.shape[1]])],
                              [numpy_helper.from_array(b, "b")])
    session = onnxruntime.InferenceSession(helper.make_model(graph).SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return lambda: session.run(["c"], {"a": a})[0]


def gemm_gflops(framework, n, repeats):
    """Best GFLOP/s of ``repeats`` ``n``³ matmuls (after one warm-up) in ``framework``."""
    call = _gemm_call(framework, n)
    call()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n ** 3 / best / 1e9


def _rss_mib():
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _reset_peak_rss():
    """Reset this process's ``VmHWM`` to its current RSS (Linux: ``5`` to ``/proc/self/clear_refs``); True if done."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return _status_mib("VmHWM") is not None
    except OSError:
        return False


def _status_mib(key):
    """A ``kB`` value of ``/proc/self/status`` in MiB, or None."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _load_module(path):
    spec = importlib.util.spec_from_file_location(f"bench_workloads_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Worker:
    """Answers the parent's requests for one side."""

    def __init__(self):
        self.workload = None
        self.side = None
        self.workdir = None
        self.setup_peak_mib = None
        self.peak_was_reset = False

    def setup(self, module, factory, kwargs, workdir, side):
        self.side, self.workdir = side, Path(workdir)
        self.workload = getattr(_load_module(module), factory)(workdir=workdir, **kwargs)
        self.setup_peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.peak_was_reset = _reset_peak_rss()
        versions = {"python": sys.version.split()[0], "numpy": np.__version__, **self.workload.versions}
        return {"items": self.workload.items, "framework": self.workload.framework, "versions": versions}

    def output(self):
        if self.workload.output is None:
            return {"path": None}
        path = self.workdir / f"{self.side}_output.npy"
        np.save(path, np.asarray(self.workload.output(), dtype=np.float64))
        return {"path": str(path)}

    def flops(self):
        return {"flops": None if self.workload.flops is None else int(self.workload.flops())}

    def run(self, iters):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(int(iters)):
            self.workload.run()
        return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "iters": int(iters)}

    def memory(self):
        return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_mib": _rss_mib(),
                "setup_peak_rss_mib": self.setup_peak_mib,
                "run_peak_rss_mib": _status_mib("VmHWM") if self.peak_was_reset else None}

    def gemm(self, n, repeats):
        return {"gflops": gemm_gflops(self.workload.framework, int(n), int(repeats))}

    def handle(self, request):
        op = request.pop("op")
        if op not in ("setup", "output", "flops", "run", "memory", "gemm"):
            raise ValueError(f"unknown request {op!r}")
        if op != "setup" and self.workload is None:
            raise RuntimeError(f"request {op!r} before setup")
        return getattr(self, op)(**request)


MAX_ERROR_CHARS = 300


def one_line(error):
    """``Type: message`` on one line, cut to :data:`MAX_ERROR_CHARS` (the full traceback goes to the log)."""
    text = f"{type(error).__name__}: {' '.join(str(error).split())}"
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 1] + "…"


def serve(read_fd, write_fd):
    """Answer requests until ``quit`` or the parent closes the pipe."""
    worker = Worker()
    with os.fdopen(read_fd, "r", encoding="utf-8") as requests, os.fdopen(write_fd, "w", encoding="utf-8") as out:
        for line in requests:
            request = json.loads(line)
            if request.get("op") == "quit":
                break
            try:
                reply = {"ok": True, **worker.handle(request)}
            except Exception as error:  # noqa: BLE001 - every failure goes back to the parent as one line
                traceback.print_exc()
                reply = {"ok": False, "error": one_line(error)}
            out.write(json.dumps(reply) + "\n")
            out.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fds", type=int, nargs=2, required=True, metavar=("READ_FD", "WRITE_FD"))
    args = parser.parse_args()
    serve(*args.fds)


if __name__ == "__main__":
    main()

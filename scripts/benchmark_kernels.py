"""Time mindram's C++ GELU / LayerNorm kernels against MindSpore's built-in ops and torch.

Usage::

    python scripts/benchmark_kernels.py [--runs 15] [--chain 1] [--threads N] [--pynative]

GELU runs on (32, 50, 3072) and LayerNorm on (32, 50, 768) float32 (CLIP ViT-B/32 at batch 32).
MindSpore cells run in GRAPH_MODE (``--pynative`` for PyNative); ``--chain k`` applies the op k
times inside one graph and reports time per op, which removes the per-call launch overhead.
Each timing is the median (and the minimum, more robust on a shared machine) of ``--runs`` calls
after two warm-up calls (which include compilation). The ratio columns divide the built-in op's
and torch's times by the kernel's (above 1 = the kernel is faster).
The torch columns use torch's default intra-op threads unless ``--threads`` is given.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import mindspore as ms  # noqa: E402  pylint: disable=wrong-import-position
from mindspore import nn  # noqa: E402  pylint: disable=wrong-import-position

from mindram.layers.activation import GELU  # noqa: E402  pylint: disable=wrong-import-position
from mindram.layers.kernels import build_info  # noqa: E402  pylint: disable=wrong-import-position
from mindram.layers.norm import LayerNorm  # noqa: E402  pylint: disable=wrong-import-position
from mindram.utils import cli  # noqa: E402  pylint: disable=wrong-import-position


class Chain(nn.Cell):
    """Apply ``cell`` ``k`` times in one graph."""

    def __init__(self, cell, k):
        super().__init__()
        self.cell, self.k = cell, int(k)

    def construct(self, x):
        for _ in range(self.k):
            x = self.cell(x)
        return x


def time_ms(fn, runs):
    """(median, min) wall time of ``fn()`` in milliseconds after two warm-up calls.

    The minimum is the better estimate on a shared machine where other processes preempt runs.
    """
    fn()
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), 1e3 * min(times)


def ms_timer(cell, x, chain):
    """Closure running ``cell`` (chained ``chain`` times) on ``x`` and waiting for the result."""
    net = Chain(cell, chain) if chain > 1 else cell

    def run():
        return net(x).asnumpy()  # CPU execution is synchronous; asnumpy makes sure of it
    return run


def make_cells(kind, width, use_kernel):
    """A GELU or LayerNorm cell (random affine parameters), forced onto kernel or built-in path."""
    if kind == "gelu":
        cell = GELU()
    else:
        rng = np.random.default_rng(1)
        cell = LayerNorm(width)
        cell.weight.set_data(ms.Tensor(rng.standard_normal(width).astype(np.float32)))
        cell.bias.set_data(ms.Tensor(rng.standard_normal(width).astype(np.float32)))
    if not use_kernel:
        cell.use_kernel = False
    return cell


def torch_timer(kind, xn, chain):
    """Closure running torch's F.gelu / F.layer_norm ``chain`` times, or None without torch."""
    try:
        import torch  # pylint: disable=import-outside-toplevel
        import torch.nn.functional as F  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    x = torch.from_numpy(xn)
    width = xn.shape[-1]
    rng = np.random.default_rng(1)
    w = torch.from_numpy(rng.standard_normal(width).astype(np.float32))
    b = torch.from_numpy(rng.standard_normal(width).astype(np.float32))

    def run():
        y = x
        with torch.no_grad():
            for _ in range(chain):
                y = F.gelu(y) if kind == "gelu" else F.layer_norm(y, (width,), w, b, 1e-5)
        return y
    return run


def main(argv=None):
    """Parse arguments, time every variant and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--chain", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--pynative", action="store_true")
    args = cli.add_debug_flag(parser).parse_args(argv)
    ms.set_context(mode=ms.PYNATIVE_MODE if args.pynative else ms.GRAPH_MODE)
    if args.threads:
        import torch  # pylint: disable=import-outside-toplevel
        torch.set_num_threads(args.threads)
    info = build_info()
    print(f"kernel library: {info['path']} (compiled now: {info['compiled']})")
    print(f"mode: {'PyNative' if args.pynative else 'GRAPH_MODE'}, chain {args.chain}, "
          f"median of {args.runs}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"MINDRAM_KERNEL_THREADS={os.environ.get('MINDRAM_KERNEL_THREADS', 'auto')}")
    rng = np.random.default_rng(0)
    cases = [("gelu", (32, 50, 3072)), ("layer_norm", (32, 50, 768))]
    print(f"{'op':<11} {'shape':<15} {'stat':<6} {'kernel ms':>10} {'built-in ms':>12} "
          f"{'torch ms':>9} {'built-in/kernel':>16} {'torch/kernel':>13}")
    for kind, shape in cases:
        xn = (rng.standard_normal(shape) * 2).astype(np.float32)
        x = ms.Tensor(xn)
        t_k = time_ms(ms_timer(make_cells(kind, shape[-1], True), x, args.chain), args.runs)
        t_b = time_ms(ms_timer(make_cells(kind, shape[-1], False), x, args.chain), args.runs)
        torch_run = torch_timer(kind, xn, args.chain)
        t_t = time_ms(torch_run, args.runs) if torch_run else (float("nan"),) * 2
        for i, stat in enumerate(("median", "min")):
            k, b, t = (v[i] / args.chain for v in (t_k, t_b, t_t))
            print(f"{kind:<11} {str(shape):<15} {stat:<6} {k:>10.3f} {b:>12.3f} {t:>9.3f} "
                  f"{b / k:>15.1f}x {t / k:>12.2f}x")

if __name__ == "__main__":
    cli.configure_logging()
    sys.exit(cli.run_cli(main, prog="benchmark_kernels.py"))

"""Linear layer with torch's (out, in) weight layout, applied as one 2-D MatMul.

``nn.Dense`` on a 3-D input reshapes to 2-D itself; writing the reshape out keeps oneDNN on its
fast GEMM path and never broadcasts the weight into a batched matmul (see docs/performance.md#layout).
"""
import math
import os

from mindspore import nn, ops

from ..errors import ConfigError
from ..utils.random import uniform_parameter
from .kernels import bias_add_primitive, kernel_input, static_shape
from .permute import Permute

SWAPPED_ROWS_ENV = "MINDRAM_SWAPPED_GEMM_ROWS"
SWAPPED_ROWS = (16, 48)
# from `high` rows on, the product is still swapped while the input is at most this many elements and the weight does
# not narrow it (out >= in): a 77-token text tower 512 wide, a 50-token ViT-B/32 (docs/performance.md "Layout")
SWAPPED_INPUT_ELEMENTS = 80 * 512


def swapped_rows():
    """Row counts ``[low, high)`` for which :class:`WeightMatMul` computes ``(weight @ x.T).T``: ``16,48`` by
    default, ``$MINDRAM_SWAPPED_GEMM_ROWS="low,high"`` to change it (``0,0``: never)."""
    value = os.environ.get(SWAPPED_ROWS_ENV)
    if not value:
        return SWAPPED_ROWS
    try:
        low, high = (int(v) for v in value.split(","))
    except ValueError:
        raise ConfigError(f"${SWAPPED_ROWS_ENV}={value!r}: expected two integers 'low,high'") from None
    return low, high


class WeightMatMul(nn.Cell):
    """``x @ weight.T`` for a 2-D ``x`` (rows, in) and a weight in torch's (out, in) layout.

    MindSpore 2.10's CPU MatMul with a transposed right operand runs at 15-50 GFLOP/s for 16-47 rows (a short
    prompt's text tower, a batch-1 ViT) and at 130-190 from 64 rows on for 1024-wide weights; the same product taken
    as ``(weight @ x.T).T`` runs at 50-120. For narrower inputs the swapped product stays ahead further (512 wide, 77
    rows: 5-20 %). The row count is static in a compiled graph, so the choice (:func:`takes_swapped_product`) is made
    once per shape; dynamic shapes take the plain transposed-B MatMul (docs/performance.md "Layout")."""

    def __init__(self):
        super().__init__()
        self.low, self.high = swapped_rows()
        self.matmul = ops.MatMul(transpose_b=True)
        self.swap_back = Permute((1, 0))

    def construct(self, x, weight):
        if static_shape(x) and takes_swapped_product(x.shape[0], weight.shape[0], x.shape[1], self.low, self.high):
            return self.swap_back(self.matmul(weight, x))
        return self.matmul(x, weight)


def takes_swapped_product(rows, out_features, in_features, low, high):
    """Whether :class:`WeightMatMul` takes ``(weight @ x.T).T`` for ``x`` (rows, in) and a weight (out, in): rows in
    ``[low, high)``, or from ``high`` on while ``rows * in <= SWAPPED_INPUT_ELEMENTS`` and ``out >= in``; never when
    ``low == high``."""
    if low >= high or rows < low:
        return False
    if rows < high:
        return True
    return rows * in_features <= SWAPPED_INPUT_ELEMENTS and out_features >= in_features


class BiasAdd(nn.Cell):
    """``x + bias`` for a 2-D ``x`` (rows, C): the C++ kernel pair of :mod:`.kernels` (its gradient sums the rows in
    one threaded pass) for static-shape float32 inputs, else ``ops.BiasAdd``."""

    def __init__(self):
        super().__init__()
        self.kernel = bias_add_primitive()
        self.use_kernel = self.kernel is not None
        self.builtin = ops.BiasAdd()

    def construct(self, x, bias):
        if self.use_kernel and kernel_input(x):
            return self.kernel(x, bias)
        return self.builtin(x, bias)


class BroadcastAdd(nn.Cell):
    """``x + b`` where ``b``'s shape is that of ``x``'s trailing axes (a bias, an attention mask or position bias
    added to every leading index): :class:`BiasAdd` on the (rows, b.size) view of ``x``.

    MindSpore 2.10's CPU ``Add`` keeps the memory of a broadcasting add's tensors for the life of a compiled graph
    (a Swin graph held every attention map its relative-position bias was added to; docs/performance.md
    "Memory"); the kernel's tensors are freed and reused like any other op's. Without kernels: ``x + b``.

    ``in_training=False`` keeps the built-in add in a training graph (CLIP's: a 2-rank msrun job stopped with
    mismatched collectives when the kernel ran on the text tower's mask, docs/performance.md "Memory")."""

    def __init__(self, in_training=True):
        super().__init__()
        self.bias_add = BiasAdd()
        self.in_training = bool(in_training)

    def construct(self, x, b):
        if (self.bias_add.use_kernel and (self.in_training or not self.training) and kernel_input(x)
                and kernel_input(b)):
            size = b.size
            return self.bias_add(x.reshape(-1, size), b.reshape(size)).reshape(x.shape)
        return x + b


class Linear(nn.Cell):
    """y = x @ weight.T + bias over the last dimension of an input of any rank."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight = uniform_parameter((self.out_features, self.in_features), bound, name="weight")
        self.has_bias = bool(bias)
        self.bias = uniform_parameter((self.out_features,), bound, name="bias") if bias else None
        self.matmul = WeightMatMul()
        self.bias_add = BiasAdd()

    def construct(self, x):
        shape = x.shape
        y = self.matmul(x.reshape(-1, shape[-1]), self.weight.astype(x.dtype))
        if self.has_bias:
            y = self.bias_add(y, self.bias.astype(x.dtype))
        return y.reshape(shape[:-1] + (self.out_features,))

    def extend_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.has_bias}"

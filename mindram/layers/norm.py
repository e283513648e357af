"""LayerNorm with PyTorch semantics: parameters named ``weight``/``bias``, eps 1e-5 by default.

MindSpore's classic ``nn.LayerNorm`` names its parameters gamma/beta and defaults to eps=1e-7;
using it silently breaks both key mapping and parity, so every model in mindram uses this one.

For static-shape float32 inputs the forward runs the C++ kernel of :mod:`.kernels` (≈0.3–0.45 ms
instead of ≈3.3 ms for 32×50×768 on a 2-core CPU; statistics in float64, so the error is about half
an ulp); other dtypes, dynamic shapes and machines without the kernel use ``ops.LayerNorm``.
The gradient runs as a C++ kernel too (dx, dweight, dbias in one pass; ``MINDRAM_BUILTIN_KERNEL_GRADS=1``
uses the built-in ``ops.LayerNorm``'s gradient instead).
"""
from mindspore import nn, ops

from ..utils.random import constant_parameter

from .kernels import eps_tensor, kernel_input, layer_norm_primitive


class LayerNorm(nn.Cell):
    """LayerNorm over the last dimension (torch ``nn.LayerNorm(normalized_shape, eps)``)."""

    def __init__(self, normalized_shape, eps=1e-5):
        super().__init__()
        self.normalized_shape = int(normalized_shape)
        self.eps = float(eps)
        self.weight = constant_parameter(self.normalized_shape, 1.0, name="weight")
        self.bias = constant_parameter(self.normalized_shape, 0.0, name="bias")
        self.layer_norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=self.eps)
        self.kernel = layer_norm_primitive(self.eps)
        self.use_kernel = self.kernel is not None
        self.eps_tensor = eps_tensor(self.eps) if self.use_kernel else None

    def construct(self, x):
        weight, bias = self.weight.astype(x.dtype), self.bias.astype(x.dtype)
        if self.use_kernel and kernel_input(x):
            return self.kernel(x, weight, bias, self.eps_tensor)
        y, _, _ = self.layer_norm(x, weight, bias)
        return y

    def extend_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"

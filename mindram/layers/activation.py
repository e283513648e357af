"""Activations by name, with the exact numerics of the PyTorch references.

``gelu`` is the exact erf GELU (torch ``nn.GELU()``); MindSpore's ``nn.GELU()`` defaults to the
tanh approximation, which is why it is never used directly. ``quick_gelu`` is OpenAI CLIP's
x·σ(1.702x).

For static-shape float32 inputs ``GELU`` runs the C++ kernel of :mod:`.kernels` (≈1.7 ms instead of
35–100 ms for 32×50×3072 on a 2-core CPU, max error 2.4e-7 vs float64,
the float32 rounding floor); other
dtypes, dynamic shapes, and machines where the kernel cannot be built use the built-in erf formula.
"""
from mindspore import nn, ops

from ..errors import ConfigError
from .kernels import gelu_primitive, kernel_input


class GELU(nn.Cell):
    """Exact (erf) GELU: x·Φ(x)."""

    def __init__(self):
        super().__init__()
        self.kernel = gelu_primitive()
        self.use_kernel = self.kernel is not None

    def construct(self, x):
        if self.use_kernel and kernel_input(x):
            return self.kernel(x)
        return ops.gelu(x, approximate="none")


class QuickGELU(nn.Cell):
    """OpenAI CLIP's sigmoid approximation of GELU: x * sigmoid(1.702 * x)."""

    def construct(self, x):
        return x * ops.sigmoid(1.702 * x)


class ReLU(nn.Cell):
    """Rectified linear unit."""

    def construct(self, x):
        return ops.relu(x)


ACTIVATIONS = {"gelu": GELU, "quick_gelu": QuickGELU, "relu": ReLU}


def get_activation(name):
    """Build an activation cell from its config name (``gelu``, ``quick_gelu``, ``relu``)."""
    try:
        return ACTIVATIONS[name]()
    except (KeyError, TypeError) as e:
        raise ConfigError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from e

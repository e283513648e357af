"""Optional C++ kernels (exact GELU, LayerNorm, bias add, transpose, and their gradients; fused self-attention
for inference) for MindSpore CPU, built at first use.

:func:`kernel_library` compiles/caches the shared library and returns its path, or None when the
kernels are disabled (``MINDRAM_DISABLE_KERNELS=1``) or cannot be built; the primitive factories
then return None, as they do when MindSpore's ``device_target`` is not ``"CPU"``, and the layers fall
back to MindSpore's built-in ops. Inside :func:`exportable` (what MindIR export uses) every layer takes the
built-in ops too, whatever the shape, so that no exported graph names the library.
"""
from .build import build_info, kernel_library, kernels_disabled
from .exportable import exportable, exporting
from .ops import (attention_primitive, attention_scale, bias_add_primitive, eps_tensor, gelu_primitive, kernel_input,
                  layer_norm_primitive, square_sum_primitive, static_shape, transpose_primitive)

__all__ = ["build_info", "kernel_library", "kernels_disabled", "exportable", "exporting", "attention_primitive",
           "attention_scale", "bias_add_primitive", "eps_tensor", "gelu_primitive", "kernel_input",
           "layer_norm_primitive", "square_sum_primitive", "static_shape", "transpose_primitive"]

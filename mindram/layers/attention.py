"""Multi-head self-attention with torch ``nn.MultiheadAttention``'s packed parameters.

Parameters keep torch's names (``in_proj_weight`` (3C, C), ``in_proj_bias`` (3C,), ``out_proj``)
so that checkpoints map one to one. q, k and v come out of one GEMM and are split along the
feature axis before the head transpose (integer-indexing a packed (3, B, H, N, D) tensor is a slow
StridedSlice on CPU).
"""
import numpy as np
from ..utils.random import constant_parameter, uniform_parameter
from mindspore import nn, ops

from .kernels import attention_primitive, attention_scale, kernel_input
from .linear import BiasAdd, Linear, WeightMatMul
from .permute import Permute


class MultiheadAttention(nn.Cell):
    """Self-attention over (B, N, C) inputs with an optional additive (N, N) mask; ``causal=True`` declares that
    the mask is the causal one (-inf above the diagonal).

    Static-shape float32 inputs with no mask (or the causal one) run the attention core as one C++ kernel
    (:func:`~mindram.layers.kernels.attention_primitive`: from the packed q/k/v to the merged heads, without the
    (B, H, N, N) scores or the split and head-transposed copies; its gradient kernel recomputes the probabilities);
    other masks and dtypes, and machines without the kernels, take the op-by-op path below it."""

    def __init__(self, dim, num_heads, causal=False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by num_heads={num_heads}")
        self.dim, self.num_heads = int(dim), int(num_heads)
        self.head_dim = self.dim // self.num_heads
        self.scale = self.head_dim ** -0.5
        bound = float(np.sqrt(6.0 / (4 * self.dim)))  # xavier_uniform on (3C, C), as torch
        self.in_proj_weight = uniform_parameter((3 * self.dim, self.dim), bound, name="in_proj_weight")
        self.in_proj_bias = constant_parameter((3 * self.dim,), 0.0, name="in_proj_bias")
        self.out_proj = Linear(self.dim, self.dim)
        self.matmul = WeightMatMul()
        self.bias_add = BiasAdd()
        self.scores = ops.BatchMatMul(transpose_b=True)
        self.weighted_sum = ops.BatchMatMul()
        self.softmax = ops.Softmax(axis=-1)
        self.causal = bool(causal)
        self.swap_heads = Permute((0, 2, 1, 3))   # (B, N, H, D) <-> (B, H, N, D)
        self.fused = attention_primitive(self.causal)
        self.use_fused = self.fused is not None
        self.scale_tensor = attention_scale(self.num_heads, self.scale)

    def _heads(self, t, batch, length):
        return self.swap_heads(t.reshape(batch, length, self.num_heads, self.head_dim))

    def construct(self, x, attn_mask=None):
        batch, length, width = x.shape
        qkv = self.matmul(x.reshape(batch * length, width), self.in_proj_weight.astype(x.dtype))
        qkv = self.bias_add(qkv, self.in_proj_bias.astype(x.dtype))
        # one kernel from the packed q/k/v to the merged heads (no mask, or the causal one)
        if self.use_fused and (attn_mask is None or self.causal) and kernel_input(qkv):
            return self.out_proj(self.fused(qkv.reshape(batch, length, 3 * width), self.scale_tensor))
        q, k, v = ops.split(qkv, self.dim, axis=-1)
        q = self._heads(q, batch, length) * self.scale
        k = self._heads(k, batch, length)
        v = self._heads(v, batch, length)
        attn = self.scores(q, k)
        attn = self.softmax(attn if attn_mask is None else attn + attn_mask.astype(attn.dtype))
        out = self.swap_heads(self.weighted_sum(attn, v)).reshape(batch, length, width)
        return self.out_proj(out)

    def extend_repr(self):
        return f"dim={self.dim}, num_heads={self.num_heads}, causal={self.causal}"

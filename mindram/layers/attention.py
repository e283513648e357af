"""Multi-head self-attention with torch ``nn.MultiheadAttention``'s packed parameters.

Parameters keep torch's names (``in_proj_weight`` (3C, C), ``in_proj_bias`` (3C,), ``out_proj``)
so that checkpoints map one to one. q, k and v come out of one GEMM and are split along the
feature axis before the head transpose (integer-indexing a packed (3, B, H, N, D) tensor is a slow
StridedSlice on CPU).
"""
import numpy as np
from ..utils.random import constant_parameter, uniform_parameter
from mindspore import nn, ops

from .linear import BiasAdd, Linear
from .permute import Permute


class MultiheadAttention(nn.Cell):
    """Self-attention over (B, N, C) inputs with an optional additive (N, N) mask."""

    def __init__(self, dim, num_heads):
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
        self.matmul = ops.MatMul(transpose_b=True)
        self.bias_add = BiasAdd()
        self.scores = ops.BatchMatMul(transpose_b=True)
        self.weighted_sum = ops.BatchMatMul()
        self.softmax = ops.Softmax(axis=-1)
        self.swap_heads = Permute((0, 2, 1, 3))   # (B, N, H, D) <-> (B, H, N, D)

    def _heads(self, t, batch, length):
        return self.swap_heads(t.reshape(batch, length, self.num_heads, self.head_dim))

    def construct(self, x, attn_mask=None):
        batch, length, width = x.shape
        qkv = self.matmul(x.reshape(batch * length, width), self.in_proj_weight.astype(x.dtype))
        qkv = self.bias_add(qkv, self.in_proj_bias.astype(x.dtype))
        q, k, v = ops.split(qkv, self.dim, axis=-1)
        q = self._heads(q, batch, length) * self.scale
        k = self._heads(k, batch, length)
        v = self._heads(v, batch, length)
        attn = self.scores(q, k)
        if attn_mask is not None:
            attn = attn + attn_mask.astype(attn.dtype)
        attn = self.softmax(attn)
        out = self.swap_heads(self.weighted_sum(attn, v)).reshape(batch, length, width)
        return self.out_proj(out)

    def extend_repr(self):
        return f"dim={self.dim}, num_heads={self.num_heads}"

"""Multi-head self-attention with torch ``nn.MultiheadAttention``'s packed parameters.

Parameters keep torch's names (``in_proj_weight`` (3C, C), ``in_proj_bias`` (3C,), ``out_proj``)
so that checkpoints map one to one. q, k and v come out of one GEMM and are split along the
feature axis before the head transpose (integer-indexing a packed (3, B, H, N, D) tensor is a slow
StridedSlice on CPU).
"""
import numpy as np
from ..utils.random import constant_parameter, uniform_parameter
from mindspore import nn, ops

from .kernels import causal_softmax_primitive, kernel_input
from .linear import BiasAdd, Linear, WeightMatMul
from .permute import Permute


class CausalSoftmax(nn.Cell):
    """``softmax(scores + mask)`` over the last axis where ``mask`` is the causal mask of the last two axes (-inf
    above the diagonal): one C++ kernel pass for static-shape float32 scores outside training (rows keep keys up to
    their own position; it has a gradient kernel too), else the built-in add and softmax. Besides the pass it
    saves, it avoids MindSpore 2.10's broadcasting ``Add``, whose tensors a compiled graph keeps for its whole life
    (docs/performance.md "Memory")."""

    def __init__(self):
        super().__init__()
        self.kernel = causal_softmax_primitive()
        self.use_kernel = self.kernel is not None
        self.softmax = ops.Softmax(axis=-1)

    def construct(self, scores, mask):
        # inference only: in a training graph the kernel's backward kept ~460 MiB more (ViT-B/32 training step at
        # batch 32: peak 6260 vs 5797 MiB with the built-in ops, docs/performance.md), for no measurable speed
        if self.use_kernel and not self.training and kernel_input(scores):
            return self.kernel(scores)
        return self.softmax(scores + mask.astype(scores.dtype))


class MultiheadAttention(nn.Cell):
    """Self-attention over (B, N, C) inputs with an optional additive (N, N) mask; ``causal=True`` declares that
    the mask is the causal one (-inf above the diagonal), which then runs as :class:`CausalSoftmax`."""

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
        self.causal_softmax = CausalSoftmax() if self.causal else None
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
        if attn_mask is None:
            attn = self.softmax(attn)
        elif self.causal:
            attn = self.causal_softmax(attn, attn_mask)
        else:
            attn = self.softmax(attn + attn_mask.astype(attn.dtype))
        out = self.swap_heads(self.weighted_sum(attn, v)).reshape(batch, length, width)
        return self.out_proj(out)

    def extend_repr(self):
        return f"dim={self.dim}, num_heads={self.num_heads}, causal={self.causal}"

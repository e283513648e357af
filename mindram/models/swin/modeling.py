"""Swin Transformer image encoder of RAM / RAM++ / Tag2Text, computing what recognize-anything's
``ram/models/swin_transformer.py`` computes (docs/ram.md#swin-encoder).

``SwinTransformer(config)(pixel_values)`` maps (B, in_chans, S, S) images to (B, 1 + L, C): the
average of the final-normed tokens, then the L tokens of the last stage (L = 144 and C = 1536 for
Swin-L at 384), exactly the tensor ``self.visual_encoder(image)`` returns in ``ram.py``/``ram_plus.py``.

Parameter names are the reference's (``patch_embed.proj``, ``layers.i.blocks.j.attn.qkv`` …) except
that each block's MLP is the shared :class:`~mindram.layers.MLP` (``mlp.c_fc``/``mlp.c_proj`` for
torch's ``mlp.fc1``/``mlp.fc2``); :mod:`.convert` maps the names. The torch buffers
``relative_position_index`` and ``attn_mask`` are recomputed here as constant tensors, not parameters.

CPU layout choices (docs/performance.md#layout): the patch embedding is one GEMM, every linear layer a 2-D
MatMul, q/k/v are split along features. The cyclic shift and the window partition are one fixed
permutation of the tokens, so each block gathers its tokens into window order with a constant index
and gathers them back with the inverse (MindSpore 2.10 has no CPU kernel for ``Roll``).
"""
import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from ...layers import MLP, LayerNorm, Linear, PatchEmbed
from ...utils.random import init_rng
from .configuration import SwinConfig

MASK_VALUE = -100.0  # the reference's value for token pairs from different regions (not -inf)


def _normal(shape, std=0.02):
    """N(0, std²) init (the reference's ``trunc_normal_`` truncates at ±2, i.e. ±100σ: never)."""
    return Tensor(init_rng().normal(0.0, std, shape).astype(np.float32))


def relative_position_index(window):
    """(N, N) index into the ((2w−1)², heads) bias table for the N = w² tokens of a window (row-major)."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)
    return rel[0] * (2 * window - 1) + rel[1]


def window_order(resolution, window, shift):
    """Token permutation of a block: entry t of the result is the raster index (in the un-shifted
    grid) of the token that lands at position t after the cyclic shift by −shift and the window
    partition (windows in raster order, tokens row-major inside a window)."""
    grid = np.arange(resolution * resolution).reshape(resolution, resolution)
    grid = np.roll(grid, (-shift, -shift), axis=(0, 1))
    n = resolution // window
    return grid.reshape(n, window, n, window).transpose(0, 2, 1, 3).reshape(-1)


def shifted_window_mask(resolution, window, shift):
    """(nW, N, N) additive mask of a shifted block: 0 inside a region, −100 across regions."""
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    regions = np.zeros((resolution, resolution), np.float32)
    for i, rows in enumerate(bounds):
        for j, cols in enumerate(bounds):
            regions[rows, cols] = 3 * i + j
    labels = regions.reshape(-1)[window_order(resolution, window, 0)].reshape(-1, window * window)
    return np.where(labels[:, None, :] != labels[:, :, None], MASK_VALUE, 0.0).astype(np.float32)


class DropPath(nn.Cell):
    """Stochastic depth: in training, zero a sample's residual branch with probability ``prob`` and
    scale the kept ones by 1/(1 − prob); the identity at inference."""

    def __init__(self, prob):
        super().__init__()
        self.prob = float(prob)
        self.dropout = nn.Dropout(p=self.prob)

    def construct(self, x):
        if not self.training:
            return x
        keep = self.dropout(ops.ones((x.shape[0],) + (1,) * (x.ndim - 1), x.dtype))
        return x * keep

    def extend_repr(self):
        return f"prob={self.prob}"


class WindowAttention(nn.Cell):
    """Multi-head self-attention inside windows with a learned relative position bias.

    Input (B·nW, N, C) with N = window²; ``mask`` (nW, N, N) is added after the bias, per window.
    """

    def __init__(self, dim, window_size, num_heads, qkv_bias=True, qk_scale=None):
        super().__init__()
        self.dim, self.window_size, self.num_heads = int(dim), int(window_size), int(num_heads)
        self.head_dim = self.dim // self.num_heads
        self.scale = float(qk_scale) if qk_scale else self.head_dim ** -0.5
        self.relative_position_bias_table = Parameter(
            _normal(((2 * self.window_size - 1) ** 2, self.num_heads)), name="relative_position_bias_table")
        self.relative_position_index = Tensor(relative_position_index(self.window_size).reshape(-1), ms.int32)
        self.qkv = Linear(self.dim, 3 * self.dim, bias=qkv_bias)
        self.proj = Linear(self.dim, self.dim)
        self.scores = ops.BatchMatMul(transpose_b=True)
        self.weighted_sum = ops.BatchMatMul()
        self.softmax = ops.Softmax(axis=-1)

    def construct(self, x, mask=None):
        windows, length, width = x.shape
        # (B_, N, 3C) → (B_, 3·heads, N, head_dim): one transpose, then q/k/v are contiguous head groups
        qkv = self.qkv(x).reshape(windows, length, 3 * self.num_heads, self.head_dim).transpose(0, 2, 1, 3)
        q, k, v = ops.split(qkv, self.num_heads, axis=1)
        attn = self.scores(q * self.scale, k)
        bias = ops.gather(self.relative_position_bias_table, self.relative_position_index, 0)
        attn = attn + bias.reshape(length, length, self.num_heads).transpose(2, 0, 1).astype(attn.dtype)
        if mask is not None:
            num_windows = mask.shape[0]
            attn = attn.reshape(windows // num_windows, num_windows, self.num_heads, length, length)
            attn = attn + mask.reshape(1, num_windows, 1, length, length).astype(attn.dtype)
            attn = attn.reshape(windows, self.num_heads, length, length)
        out = self.weighted_sum(self.softmax(attn), v)
        return self.proj(out.transpose(0, 2, 1, 3).reshape(windows, length, width))

    def extend_repr(self):
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


class SwinTransformerBlock(nn.Cell):
    """x + attn(windows(shift(norm1(x)))) reversed, then x + mlp(norm2(x)); (B, L, C) in and out."""

    def __init__(self, dim, resolution, num_heads, window_size, shift_size, mlp_ratio=4.0, qkv_bias=True,
                 qk_scale=None, drop_path=0.0, eps=1e-5):
        super().__init__()
        self.dim, self.resolution = int(dim), int(resolution)
        self.window_size, self.shift_size = int(window_size), int(shift_size)
        self.norm1 = LayerNorm(dim, eps)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, qk_scale)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None
        self.norm2 = LayerNorm(dim, eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio), "gelu")
        order = window_order(self.resolution, self.window_size, self.shift_size)
        identity = bool(np.array_equal(order, np.arange(order.size)))  # one window, no shift
        self.to_windows = None if identity else Tensor(order, ms.int32)
        self.from_windows = None if identity else Tensor(np.argsort(order), ms.int32)
        self.attn_mask = Tensor(shifted_window_mask(self.resolution, self.window_size, self.shift_size)) \
            if self.shift_size > 0 else None

    def _residual(self, x):
        return x if self.drop_path is None else self.drop_path(x)

    def construct(self, x):
        batch, length, width = x.shape
        h = self.norm1(x)
        if self.to_windows is not None:
            h = ops.gather(h, self.to_windows, 1)
        h = self.attn(h.reshape(-1, self.window_size * self.window_size, width), self.attn_mask)
        h = h.reshape(batch, length, width)
        if self.from_windows is not None:
            h = ops.gather(h, self.from_windows, 1)
        x = x + self._residual(h)
        return x + self._residual(self.mlp(self.norm2(x)))

    def extend_repr(self):
        return (f"dim={self.dim}, resolution={self.resolution}, window_size={self.window_size}, "
                f"shift_size={self.shift_size}")


class PatchMerging(nn.Cell):
    """2×2 neighbourhoods → channels in the reference's order (x0: even row/even col, x1: odd/even,
    x2: even/odd, x3: odd/odd) → LayerNorm(4C) → Linear(4C → 2C, no bias)."""

    def __init__(self, resolution, dim, eps=1e-5):
        super().__init__()
        self.resolution, self.dim = int(resolution), int(dim)
        self.norm = LayerNorm(4 * self.dim, eps)
        self.reduction = Linear(4 * self.dim, 2 * self.dim, bias=False)

    def construct(self, x):
        batch, length, width = x.shape
        half = self.resolution // 2
        # (B, H/2, row parity, W/2, col parity, C) → (B, H/2, W/2, col parity, row parity, C)
        x = x.reshape(batch, half, 2, half, 2, width).transpose(0, 1, 3, 4, 2, 5)
        return self.reduction(self.norm(x.reshape(batch, half * half, 4 * width)))


class BasicLayer(nn.Cell):
    """One stage: blocks alternating plain and shifted windows, then an optional patch merging."""

    def __init__(self, stage, config, drop_path):
        super().__init__()
        self.blocks = nn.CellList([
            SwinTransformerBlock(stage.dim, stage.resolution, stage.num_heads, stage.window_size,
                                 stage.shift_size if i % 2 else 0, config.mlp_ratio, config.qkv_bias,
                                 config.qk_scale, drop_path[i], config.layer_norm_eps)
            for i in range(stage.depth)])
        self.downsample = PatchMerging(stage.resolution, stage.dim, config.layer_norm_eps) \
            if stage.downsample else None

    def construct(self, x):
        for block in self.blocks:
            x = block(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class SwinPatchEmbed(nn.Cell):
    """Non-overlapping patch GEMM (``proj``, conv weight layout) and an optional LayerNorm (``norm``)."""

    def __init__(self, config):
        super().__init__()
        self.proj = PatchEmbed(config.in_chans, config.embed_dim, config.patch_size, bias=True)
        self.norm = LayerNorm(config.embed_dim, config.layer_norm_eps) if config.patch_norm else None

    def construct(self, x):
        x = self.proj(x)
        return x if self.norm is None else self.norm(x)


class SwinTransformer(nn.Cell):
    """RAM's image encoder: ``(B, in_chans, S, S)`` → ``(B, 1 + L, num_features)``, token 0 being the
    mean of the L final-normed tokens (the reference's ``avgpool``). S must equal ``image_size``."""

    def __init__(self, config=None):
        super().__init__()
        if config is None:
            config = SwinConfig()
        elif isinstance(config, dict):
            config = SwinConfig.from_dict(config)
        self.config = config
        self.image_size, self.in_chans = config.image_size, config.in_chans
        self.num_features = config.num_features
        self.patch_embed = SwinPatchEmbed(config)
        self.ape = config.ape
        if self.ape:
            self.absolute_pos_embed = Parameter(_normal((1, config.patches_resolution ** 2, config.embed_dim)),
                                                name="absolute_pos_embed")
        stages = config.stages()
        rates = np.linspace(0.0, config.drop_path_rate, sum(s.depth for s in stages)).tolist()
        starts = np.cumsum([0] + [s.depth for s in stages]).tolist()
        self.layers = nn.CellList([BasicLayer(stage, config, rates[starts[i]:starts[i + 1]])
                                   for i, stage in enumerate(stages)])
        self.norm = LayerNorm(self.num_features, config.layer_norm_eps)

    def construct(self, pixel_values):
        if pixel_values.shape[1:] != (self.in_chans, self.image_size, self.image_size):
            raise ValueError(f"SwinTransformer expects (B, {self.in_chans}, {self.image_size}, {self.image_size}) "
                             f"images, got {pixel_values.shape}")
        x = self.patch_embed(pixel_values)
        if self.ape:
            x = x + self.absolute_pos_embed.astype(x.dtype)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        return ops.concat((x.mean(axis=1, keep_dims=True), x), axis=1)

"""Swin Transformer image encoder of RAM / RAM++ / Tag2Text, computing what recognize-anything's
``ram/models/swin_transformer.py`` computes (docs/ram.md#swin-encoder), at any input resolution.

``SwinTransformer(config)(pixel_values)`` maps (B, in_chans, H, W) images to (B, 1 + L, C): the
average of the final-normed tokens, then the L tokens of the last stage (L = 144 and C = 1536 for
Swin-L at 384), exactly the tensor ``self.visual_encoder(image)`` returns in ``ram.py``/``ram_plus.py``.
H and W are any multiples of ``patch_size`` (at least one patch); at ``image_size`` the network is the
reference's, at other sizes the windows are padded and masked (:mod:`.windows`, docs/ram.md#input-resolution),
patch merging pads odd maps with zeros (as Hugging Face's Swin does) and an absolute position embedding is
resized bicubically.

Parameter names are the reference's (``patch_embed.proj``, ``layers.i.blocks.j.attn.qkv`` …) except
that each block's MLP is the shared :class:`~mindram.layers.MLP` (``mlp.c_fc``/``mlp.c_proj`` for
torch's ``mlp.fc1``/``mlp.fc2``); :mod:`.convert` maps the names. The torch buffers
``relative_position_index`` and ``attn_mask`` are recomputed here as constant tensors, not parameters.

CPU layout choices (docs/performance.md#layout): the patch embedding is one GEMM, every linear layer a 2-D
MatMul, q/k/v are split along features. Padding, the cyclic shift and the window partition are one fixed
gather of the tokens (plus one zero token standing for the padding), undone by the inverse gather
(MindSpore 2.10 has no CPU kernel for ``Roll``). These indices and masks depend on the map size only:
they are computed on the host once per input shape (``ops.constexpr``, so a compiled graph holds them as
constants and PyNative reuses cached tensors).
"""
import functools

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from ...layers import MLP, BroadcastAdd, LayerNorm, Linear, PatchEmbed, Permute
from ...layers.kernels import attention_primitive, attention_scale, kernel_input
from ...utils.random import normal_parameter
from .configuration import SwinConfig, input_shape_error
from .windows import bicubic_resize_matrix, relative_position_index, window_plan


INIT_STD = 0.02   # N(0, 0.02²): the reference's ``trunc_normal_`` truncates at ±2, i.e. ±100σ: never


TO_WINDOWS, FROM_WINDOWS, MASK, BIAS_INDEX = range(4)  # positions in _plan_tensors


@functools.lru_cache(maxsize=64)  # a 4-stage Swin uses 8 plans per input size
def _plan_tensors(height, width, window, shifted):
    """The :func:`window_plan` arrays as constant tensors (None where the plan has none)."""
    plan = window_plan(height, width, window, shifted)
    return tuple(None if a is None else Tensor(a) for a in
                 (plan.to_windows, plan.from_windows, plan.mask, plan.bias_index))


@ops.constexpr
def _window_layout(height, width, window, shifted):
    """(tokens per window, needs the padding token, reorders tokens, has a mask) of a block on a map."""
    plan = window_plan(height, width, window, shifted)
    return (plan.window_tokens, plan.padded[0] * plan.padded[1] > height * width, plan.to_windows is not None,
            plan.mask is not None)


@ops.constexpr
def _plan_tensor(height, width, window, shifted, which):
    """Entry ``which`` (TO_WINDOWS, FROM_WINDOWS, MASK, BIAS_INDEX) of :func:`_plan_tensors`."""
    return _plan_tensors(height, width, window, shifted)[which]


@ops.constexpr
def _check_pixels(shape, in_chans, patch_size):
    error = input_shape_error(shape, in_chans, patch_size)
    if error:
        raise ValueError(f"SwinTransformer: {error}")


@functools.lru_cache(maxsize=64)
def _resize_tensor(src, dst):
    return Tensor(bicubic_resize_matrix(src, dst))


@ops.constexpr
def _resize_matrix(src, dst):
    return _resize_tensor(src, dst)


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

    Input (B·nW, N, C); ``mask`` (nW, N, N) is added after the bias, per window; ``bias_index`` (N·N,)
    selects the bias table rows of the window's token pairs (default: a full window_size² window).
    """

    def __init__(self, dim, window_size, num_heads, qkv_bias=True, qk_scale=None):
        super().__init__()
        self.dim, self.window_size, self.num_heads = int(dim), int(window_size), int(num_heads)
        self.head_dim = self.dim // self.num_heads
        self.scale = float(qk_scale) if qk_scale else self.head_dim ** -0.5
        self.relative_position_bias_table = normal_parameter(((2 * self.window_size - 1) ** 2, self.num_heads),
                                                             INIT_STD, name="relative_position_bias_table")
        self.relative_position_index = Tensor(relative_position_index(self.window_size).reshape(-1), ms.int32)
        self.qkv = Linear(self.dim, 3 * self.dim, bias=qkv_bias)
        self.proj = Linear(self.dim, self.dim)
        self.scores = ops.BatchMatMul(transpose_b=True)
        self.weighted_sum = ops.BatchMatMul()
        self.softmax = ops.Softmax(axis=-1)
        self.swap_heads = Permute((0, 2, 1, 3))   # (B_, N, H, D) <-> (B_, H, N, D)
        self.heads_first = Permute((2, 0, 1))     # (N, N, H) -> (H, N, N)
        self.add_bias = BroadcastAdd()
        self.fused, self.fused_masked = attention_primitive(bias=True), attention_primitive(bias=True, mask=True)
        self.use_fused = self.fused is not None and self.fused_masked is not None
        self.scale_tensor = attention_scale(self.num_heads, self.scale)

    def construct(self, x, mask=None, bias_index=None):
        windows, length, width = x.shape
        if bias_index is None:
            bias_index = self.relative_position_index
        qkv = self.qkv(x)
        bias = ops.gather(self.relative_position_bias_table, bias_index, 0)
        bias = self.heads_first(bias.reshape(length, length, self.num_heads)).astype(qkv.dtype)   # (H, N, N)
        if self.use_fused and not self.training and kernel_input(qkv):
            # inference: one kernel from the packed q/k/v to the merged heads, bias (and mask) added to the scores
            if mask is None:
                return self.proj(self.fused(qkv, self.scale_tensor, bias))
            return self.proj(self.fused_masked(qkv, self.scale_tensor, bias, mask.astype(qkv.dtype)))
        # (B_, N, 3C) → (B_, 3·heads, N, head_dim): one transpose, then q/k/v are contiguous head groups
        qkv = self.swap_heads(qkv.reshape(windows, length, 3 * self.num_heads, self.head_dim))
        q, k, v = ops.split(qkv, self.num_heads, axis=1)
        attn = self.scores(q * self.scale, k)
        if mask is None:
            attn = self.add_bias(attn, bias)
        else:  # bias and mask summed once (nW, H, N, N), then added to every image's nW windows
            num_windows = mask.shape[0]
            bias = bias + mask.reshape(num_windows, 1, length, length).astype(attn.dtype)
            attn = self.add_bias(attn.reshape(windows // num_windows, num_windows, self.num_heads, length, length),
                                 bias).reshape(windows, self.num_heads, length, length)
        out = self.weighted_sum(self.softmax(attn), v)
        return self.proj(self.swap_heads(out).reshape(windows, length, width))

    def extend_repr(self):
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


class SwinTransformerBlock(nn.Cell):
    """x + attn(windows(shift(pad(norm1(x))))) reversed, then x + mlp(norm2(x)); (B, h·w, C) in and out.

    ``resolution`` and ``shift_size`` are the configured map side and shift (the reference's buffers);
    ``shifted`` (odd blocks) makes the block shift by window_size // 2 on any map larger than the window.
    """

    def __init__(self, dim, resolution, num_heads, window_size, shift_size, mlp_ratio=4.0, qkv_bias=True,
                 qk_scale=None, drop_path=0.0, eps=1e-5, shifted=None):
        super().__init__()
        self.dim, self.resolution = int(dim), int(resolution)
        self.window_size, self.shift_size = int(window_size), int(shift_size)
        self.shifted = bool(self.shift_size) if shifted is None else bool(shifted)
        self.norm1 = LayerNorm(dim, eps)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, qk_scale)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None
        self.norm2 = LayerNorm(dim, eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio), "gelu")

    @property
    def attn_mask(self):
        """The (nW, N, N) mask at the configured resolution (the reference's buffer), or None."""
        return _plan_tensors(self.resolution, self.resolution, self.window_size, self.shifted)[MASK]

    def _residual(self, x):
        return x if self.drop_path is None else self.drop_path(x)

    def construct(self, x, height, width):
        batch, length, channels = x.shape
        window, shifted = self.window_size, self.shifted
        window_tokens, padded, reordered, masked = _window_layout(height, width, window, shifted)
        h = self.norm1(x)
        if padded:
            h = ops.concat((h, ops.zeros((batch, 1, channels), h.dtype)), axis=1)
        if reordered:
            h = ops.gather(h, _plan_tensor(height, width, window, shifted, TO_WINDOWS), 1)
        mask = _plan_tensor(height, width, window, shifted, MASK) if masked else None
        bias_index = _plan_tensor(height, width, window, shifted, BIAS_INDEX)
        h = self.attn(h.reshape(-1, window_tokens, channels), mask, bias_index)
        h = h.reshape(batch, -1, channels)
        if reordered:
            h = ops.gather(h, _plan_tensor(height, width, window, shifted, FROM_WINDOWS), 1)
        x = x + self._residual(h)
        return x + self._residual(self.mlp(self.norm2(x)))

    def extend_repr(self):
        return (f"dim={self.dim}, resolution={self.resolution}, window_size={self.window_size}, "
                f"shift_size={self.shift_size}")


class PatchMerging(nn.Cell):
    """2×2 neighbourhoods → channels in the reference's order (x0: even row/even col, x1: odd/even,
    x2: even/odd, x3: odd/odd) → LayerNorm(4C) → Linear(4C → 2C, no bias). An odd map side is first
    padded with a zero row/column at its end (Hugging Face's Swin does the same)."""

    def __init__(self, resolution, dim, eps=1e-5):
        super().__init__()
        self.resolution, self.dim = int(resolution), int(dim)
        self.norm = LayerNorm(4 * self.dim, eps)
        self.reduction = Linear(4 * self.dim, 2 * self.dim, bias=False)
        self.parities_last = Permute((0, 1, 3, 4, 2, 5))

    def construct(self, x, height, width):
        batch, length, channels = x.shape
        rows, cols = (height + 1) // 2, (width + 1) // 2
        if height % 2 or width % 2:
            x = x.reshape(batch, height, width, channels)
            if height % 2:
                x = ops.concat((x, ops.zeros((batch, 1, width, channels), x.dtype)), axis=1)
            if width % 2:
                x = ops.concat((x, ops.zeros((batch, 2 * rows, 1, channels), x.dtype)), axis=2)
        # (B, H/2, row parity, W/2, col parity, C) → (B, H/2, W/2, col parity, row parity, C)
        x = self.parities_last(x.reshape(batch, rows, 2, cols, 2, channels))
        return self.reduction(self.norm(x.reshape(batch, rows * cols, 4 * channels)))


class BasicLayer(nn.Cell):
    """One stage: blocks alternating plain and shifted windows, then an optional patch merging;
    ``(x, height, width)`` → the same for the next stage."""

    def __init__(self, stage, config, drop_path):
        super().__init__()
        self.blocks = nn.CellList([
            SwinTransformerBlock(stage.dim, stage.resolution, stage.num_heads, stage.window_size,
                                 stage.shift_size if i % 2 else 0, config.mlp_ratio, config.qkv_bias,
                                 config.qk_scale, drop_path[i], config.layer_norm_eps, shifted=bool(i % 2))
            for i in range(stage.depth)])
        self.downsample = PatchMerging(stage.resolution, stage.dim, config.layer_norm_eps) \
            if stage.downsample else None

    def construct(self, x, height, width):
        for block in self.blocks:
            x = block(x, height, width)
        if self.downsample is None:
            return x, height, width
        return self.downsample(x, height, width), (height + 1) // 2, (width + 1) // 2


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
    """RAM's image encoder: ``(B, in_chans, H, W)`` → ``(B, 1 + L, num_features)``, token 0 being the
    mean of the L final-normed tokens (the reference's ``avgpool``). H and W: positive multiples of
    ``patch_size``; ``image_size`` (square) is the resolution the reference builds."""

    def __init__(self, config=None):
        super().__init__()
        if config is None:
            config = SwinConfig()
        elif isinstance(config, dict):
            config = SwinConfig.from_dict(config)
        self.config = config
        self.image_size, self.in_chans, self.patch_size = config.image_size, config.in_chans, config.patch_size
        self.grid = config.patches_resolution
        self.num_features = config.num_features
        self.patch_embed = SwinPatchEmbed(config)
        self.ape = config.ape
        if self.ape:
            self.absolute_pos_embed = normal_parameter((1, self.grid ** 2, config.embed_dim), INIT_STD,
                                                       name="absolute_pos_embed")
        stages = config.stages()
        rates = np.linspace(0.0, config.drop_path_rate, sum(s.depth for s in stages)).tolist()
        starts = np.cumsum([0] + [s.depth for s in stages]).tolist()
        self.layers = nn.CellList([BasicLayer(stage, config, rates[starts[i]:starts[i + 1]])
                                   for i, stage in enumerate(stages)])
        self.norm = LayerNorm(self.num_features, config.layer_norm_eps)

    def position_embedding(self, rows, cols):
        """(1, rows·cols, embed_dim) absolute position embedding: the learnt one, resized bicubically
        (torch's ``interpolate``, align_corners=False) from its grid × grid to rows × cols."""
        pos = self.absolute_pos_embed
        if (rows, cols) == (self.grid, self.grid):
            return pos
        grid, width = self.grid, pos.shape[-1]
        pos = ops.matmul(_resize_matrix(grid, rows), pos.reshape(grid, grid * width))        # (rows, grid·C)
        pos = pos.reshape(rows, grid, width).transpose(1, 0, 2).reshape(grid, rows * width)
        pos = ops.matmul(_resize_matrix(grid, cols), pos)                                     # (cols, rows·C)
        return pos.reshape(cols, rows, width).transpose(1, 0, 2).reshape(1, rows * cols, width)

    def construct(self, pixel_values):
        _check_pixels(pixel_values.shape, self.in_chans, self.patch_size)
        rows, cols = pixel_values.shape[2] // self.patch_size, pixel_values.shape[3] // self.patch_size
        x = self.patch_embed(pixel_values)
        if self.ape:
            x = x + self.position_embedding(rows, cols).astype(x.dtype)
        for layer in self.layers:
            x, rows, cols = layer(x, rows, cols)
        x = self.norm(x)
        return ops.concat((x.mean(axis=1, keep_dims=True), x), axis=1)

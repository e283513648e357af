"""Swin at input resolutions other than the configured one (docs/ram.md#input-resolution).

The window path (padding, shift, masks, bias rows, odd patch merging, resized absolute position embedding)
is checked against a brute-force numpy forward that never pads or gathers: every real token attends, with
exact exclusion, to the real tokens that share its window and shift region, as the rule says. A wrong
padding mask, shift, inverse gather or bias row changes the outputs by far more than the tolerance. The
configured resolution is checked against the reference's own buffers here and against the reference's
outputs in tests/parity/test_swin_parity.py and test_ram_parity.py.
"""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from mindram.errors import ConfigError
from mindram.models.ram import RAMImageProcessor, RAMPlus
from mindram.models.swin import SwinConfig, SwinTransformer
from mindram.models.swin.modeling import SwinTransformerBlock
from mindram.models.swin.windows import (bicubic_resize_matrix, shifted_window_mask, window_order,
                                         window_plan)
from mindram.utils.graph import run_in_graph_mode
from tests.fixtures.ram.loader import fixture_config

TINY = dict(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4)
# tests/fixtures/swin: odd window 5, ape, qk_scale, no qkv bias; and a stage whose window shrank to 2
VARIANT = dict(image_size=40, patch_size=2, embed_dim=12, depths=[2, 3, 2], num_heads=[2, 3, 6], window_size=5,
               mlp_ratio=2.0, qkv_bias=False, qk_scale=0.25, ape=True, patch_norm=False, layer_norm_eps=1e-6)
SHRUNK = dict(image_size=64, patch_size=4, embed_dim=8, depths=[2, 2, 2, 2], num_heads=[2, 2, 4, 4], window_size=4)
# RAM's geometry (patch 4, window 12, configured 384) with tiny widths and depths
RAM_LIKE = dict(image_size=384, patch_size=4, embed_dim=8, depths=[1, 1, 1, 2], num_heads=[1, 1, 2, 2],
                window_size=12, drop_path_rate=0.0)


@pytest.fixture(autouse=True)
def pynative():
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=previous)


def build(config, seed=0):
    np.random.seed(seed)
    model = SwinTransformer(SwinConfig.from_dict(config))
    model.set_train(False)
    # non-trivial norms and biases, so that a wrong padding token or bias row shows
    rng = np.random.default_rng(seed)
    for p in model.get_parameters():
        if p.name.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            p.set_data(Tensor(1.0 + 0.3 * rng.standard_normal(p.shape).astype(np.float32)))
        elif p.name.endswith(("bias", "relative_position_bias_table")):
            p.set_data(Tensor(0.5 * rng.standard_normal(p.shape).astype(np.float32)))
    return model


def images(height, width, batch=2, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, height, width)).astype(np.float32)


# ---- brute force: no padding, no gathers, exact exclusion ----
def _axis(size, window, shifted):
    """(window extent, padded size, shift) of one axis: one unshifted window if size <= window."""
    if size <= window:
        return size, size, 0
    return window, -(-size // window) * window, window // 2 if shifted else 0


def _regions(rolled, padded, extent, shift):
    if not shift:
        return np.zeros_like(rolled)
    return np.where(rolled < padded - extent, 0, np.where(rolled < padded - shift, 1, 2))


def brute_block(block, x, height, width):
    window, attn = block.window_size, block.attn
    rows, cols = np.divmod(np.arange(height * width), width)
    keys, coords = [], []
    for pos, size in ((rows, height), (cols, width)):
        extent, padded, shift = _axis(size, window, block.shifted)
        rolled = (pos - shift) % padded
        keys += [rolled // extent, _regions(rolled, padded, extent, shift)]
        coords.append(rolled)
    allowed = np.all([k[:, None] == k[None, :] for k in keys], axis=0)
    offset = [c[:, None] - c[None, :] + window - 1 for c in coords]
    table_rows = np.where(allowed, offset[0] * (2 * window - 1) + offset[1], 0)
    bias = attn.relative_position_bias_table.asnumpy().astype(np.float64)[table_rows].transpose(2, 0, 1)

    batch, length, dim = x.shape
    heads, head_dim = attn.num_heads, dim // attn.num_heads
    h = block.norm1(Tensor(x)).asnumpy().astype(np.float64)
    qkv = h @ attn.qkv.weight.asnumpy().T.astype(np.float64)
    if attn.qkv.bias is not None:
        qkv = qkv + attn.qkv.bias.asnumpy()
    q, k, v = qkv.reshape(batch, length, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
    scores = np.where(allowed, attn.scale * q @ k.transpose(0, 1, 3, 2) + bias, -np.inf)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    out = (weights / weights.sum(axis=-1, keepdims=True)) @ v
    out = out.transpose(0, 2, 1, 3).reshape(batch, length, dim)
    out = out @ attn.proj.weight.asnumpy().T + attn.proj.bias.asnumpy()
    x = (x + out).astype(np.float32)
    return x + block.mlp(block.norm2(Tensor(x))).asnumpy()


def brute_merge(merge, x, height, width):
    batch, _, dim = x.shape
    grid = np.pad(x.reshape(batch, height, width, dim), ((0, 0), (0, height % 2), (0, width % 2), (0, 0)))
    parts = [grid[:, 0::2, 0::2], grid[:, 1::2, 0::2], grid[:, 0::2, 1::2], grid[:, 1::2, 1::2]]
    merged = np.concatenate(parts, axis=-1).reshape(batch, -1, 4 * dim)
    return merge.reduction(merge.norm(Tensor(merged))).asnumpy()


def brute_forward(model, pixels):
    p = model.patch_size
    height, width = pixels.shape[2] // p, pixels.shape[3] // p
    x = model.patch_embed(Tensor(pixels)).asnumpy()
    if model.ape:
        grid = model.grid
        pos = model.absolute_pos_embed.asnumpy().reshape(grid, grid, -1)
        pos = np.einsum("ap,pqc,bq->abc", bicubic_resize_matrix(grid, height), pos,
                        bicubic_resize_matrix(grid, width))
        x = x + pos.reshape(1, height * width, -1)
    for layer in model.layers:
        for block in layer.blocks:
            x = brute_block(block, x, height, width)
        if layer.downsample is not None:
            x = brute_merge(layer.downsample, x, height, width)
            height, width = (height + 1) // 2, (width + 1) // 2
    x = model.norm(Tensor(x)).asnumpy()
    return np.concatenate([x.mean(axis=1, keepdims=True), x], axis=1), (height, width)


def assert_close(actual, expected, atol=2e-5):
    assert actual.shape == expected.shape
    diff = float(np.abs(actual - expected).max())
    assert diff <= atol * max(1.0, float(np.abs(expected).max())), f"max-abs-diff {diff:.3g}"


@pytest.mark.parametrize("config,size", [
    (TINY, (32, 32)),    # configured: no padding
    (TINY, (20, 20)),    # maps 10 (padded to 12) and 5 (padded to 8)
    (TINY, (26, 26)),    # map 13: odd patch merging → 7
    (TINY, (2, 2)),      # one patch: one token
    (TINY, (20, 44)),    # 10 x 22 → 5 x 11, not square
    (TINY, (8, 40)),     # 4 x 20: one window along rows, shifted windows along columns
    (VARIANT, (52, 36)),  # window 5: 26 x 18 → 30 x 20, 13 x 9 → 15 x 10, 7 x 5; ape resized 20 x 20 → 26 x 18
    (SHRUNK, (96, 96)),   # stage 3 has a 2x2 window (configured map 2); map 3 → padded 4, shifted
], ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else None)
def test_forward_matches_brute_force_windowed_attention(config, size):
    model = build(config)
    pixels = images(*size)
    out = model(Tensor(pixels)).asnumpy()
    expected, (rows, cols) = brute_forward(model, pixels)
    assert out.shape == (2, 1 + rows * cols, model.num_features)
    assert (rows, cols) == model.config.output_grid(*size)
    assert_close(out, expected)


@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize("side", [7, 14, 16, 28])  # RAM Swin-L stage maps at 224, 448, 512 (window 12)
def test_ram_window_geometry_matches_brute_force(side, shifted):
    np.random.seed(1)
    block = SwinTransformerBlock(8, 12, 2, 12, 6 if shifted else 0, shifted=shifted)
    block.set_train(False)
    table = block.attn.relative_position_bias_table
    table.set_data(Tensor(np.random.default_rng(1).standard_normal(table.shape).astype(np.float32)))
    x = np.random.default_rng(2).standard_normal((2, side * side, 8)).astype(np.float32)
    assert_close(block(Tensor(x), side, side).asnumpy(), brute_block(block, x, side, side))


def test_configured_plans_are_the_reference_buffers():
    """At image_size nothing is padded: the order is the reference's roll + partition and the mask its attn_mask."""
    for config in (SwinConfig.from_pretrained("swin_l_384"), SwinConfig.from_dict(VARIANT),
                   SwinConfig.from_dict(SHRUNK)):
        for stage in config.stages():
            res, window = stage.resolution, stage.window_size
            plain, shifted = window_plan(res, res, window, False), window_plan(res, res, window, True)
            assert plain.mask is None and plain.padded == (res, res)
            if stage.shift_size:
                np.testing.assert_array_equal(shifted.to_windows, window_order(res, window, stage.shift_size))
                np.testing.assert_array_equal(np.argsort(shifted.to_windows), shifted.from_windows)
                np.testing.assert_array_equal(shifted.mask, shifted_window_mask(res, window, stage.shift_size))
            else:  # the map is one window: global attention, no shift
                assert res == window and shifted.to_windows is None and shifted.mask is None


def test_padding_is_masked_and_shift_regions_kept():
    plan = window_plan(14, 14, 12, True)  # Swin-L stage 3 at 448: padded to 24, shifted by 6
    assert plan.padded == (24, 24) and plan.shift == (6, 6) and plan.mask.shape == (4, 144, 144)
    pad = plan.to_windows.reshape(4, 144) == 14 * 14
    assert pad.sum() == 24 * 24 - 14 * 14 and not pad.all(axis=1).any()  # no window is only padding
    assert (plan.mask[~pad[:, :, None] & pad[:, None, :]] == -100).all()  # real queries never see padding
    small = window_plan(7, 7, 12, True)  # 224: a map smaller than the window is one unshifted window
    assert small.window == (7, 7) and small.mask is None and small.to_windows is None
    assert small.bias_index.size == 49 * 49 and small.bias_index.max() < 23 * 23


def test_ram_like_sizes():
    model = build(RAM_LIKE)
    for side, grid in ((224, 7), (448, 14), (512, 16)):
        out = model(Tensor(images(side, side, batch=1))).asnumpy()
        assert out.shape == (1, 1 + grid * grid, 64) and np.isfinite(out).all()
        np.testing.assert_allclose(out[:, 0], out[:, 1:].mean(axis=1), atol=1e-5)


def test_graph_mode_equals_pynative_at_other_sizes():
    """The compiled graph takes its windows, masks and resized positions per input shape."""
    model = build(dict(TINY, ape=True))
    x = Tensor(images(20, 44))
    np.testing.assert_allclose(run_in_graph_mode(model, x).asnumpy(), model(x).asnumpy(), atol=1e-5, rtol=0)


def test_bicubic_resize_matrix():
    np.testing.assert_array_equal(bicubic_resize_matrix(5, 5), np.eye(5, dtype=np.float32))
    up = bicubic_resize_matrix(4, 9)
    np.testing.assert_allclose(up.sum(axis=1), 1.0, atol=1e-6)  # constants stay constant
    # torch's weights for output 4 of 4 → 9: source position 1.5, cubic convolution with A = -0.75
    np.testing.assert_allclose(up[4], [-0.09375, 0.59375, 0.59375, -0.09375], atol=1e-7)


def test_sizes_that_cannot_work_are_errors():
    model = build(TINY)
    with pytest.raises(ValueError, match=r"positive multiples of patch_size=2 .*got 33x32"):
        model(Tensor(np.zeros((1, 3, 33, 32), np.float32)))
    with pytest.raises(ValueError, match=r"expected \(B, 3, H, W\) images"):
        model(Tensor(np.zeros((1, 4, 32, 32), np.float32)))
    config = SwinConfig.from_dict(TINY)
    with pytest.raises(ValueError, match="smallest 2x2"):
        config.check_input_size(0)
    config.check_input_size(2, 100)


def test_tiny_ram_end_to_end_at_several_sizes():
    config = fixture_config("ram_plus")  # Swin 96 px, patch 4, window 3
    np.random.seed(0)
    model = RAMPlus(config)
    model.set_train(False)
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    for size, grid in ((64, 2), (136, 5)):  # Swin maps 16 → 2 (one window of 3), 34 → 5 (padded to 6)
        pixels = RAMImageProcessor.for_config(config, image_size=size)([photo])
        assert pixels.shape == (1, 3, size, size)
        embeds = model.visual_encoder(Tensor(pixels))
        assert embeds.shape == (1, 1 + grid * grid, config.vision_width)
        logits = model.head_logits(embeds).asnumpy()
        assert logits.shape == (1, config.num_tags) and np.isfinite(logits).all()
    with pytest.raises(ConfigError, match="image_size=98.*patch_size=4"):
        RAMImageProcessor.for_config(config, image_size=98)

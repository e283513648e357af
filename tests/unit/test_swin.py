"""Swin Transformer: RAM's full-size key layout, tiny-config behaviour, config checks, converter."""
import json

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from mindram.errors import CheckpointError, ConfigError
from mindram.models.modeling_utils import load_state_dict
from mindram.models.swin import (SwinConfig, SwinTransformer, config_from_state_dict, convert_swin_state_dict,
                                 expected_shapes, is_swin_buffer, to_torch_swin_state_dict)
from mindram.models.swin.windows import relative_position_index, shifted_window_mask, window_order
from mindram.utils.graph import run_in_graph_mode
from tests.conftest import FIXTURES

SPECS = FIXTURES / "ram_keys"
PREFIX = "visual_encoder."
# 32×32 input, patch 2: grids 16 and 8, window 4 → shifted, masked windows in both stages
TINY = dict(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4)


def tsv_shapes(name):
    """``{torch name: shape}`` of the ``visual_encoder.*`` rows of a reference key list (buffers included)."""
    path = SPECS / f"ram_keys_{name}.tsv"
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
    return {n: tuple(json.loads(s)) for n, s, _ in rows if n.startswith(PREFIX)}


def params_of(model):
    return {p.name: p.asnumpy() for p in model.get_parameters()}


def build(config, seed=0):
    np.random.seed(seed)
    model = SwinTransformer(config)
    model.set_train(False)
    return model


def pixels(config, batch=2, seed=0):
    size = config.image_size
    return Tensor(np.random.default_rng(seed).standard_normal((batch, config.in_chans, size, size)).astype(np.float32))


def test_swin_l_384_has_the_reference_parameters():
    """One full-size build: names and shapes equal the RAM++ checkpoint's ``visual_encoder.*`` entries
    after the name map, minus the 35 buffers (24 relative_position_index + 11 attn_mask)."""
    expected = tsv_shapes("ram_plus_swin_l")
    buffers = sorted(k for k in expected if is_swin_buffer(k))
    assert len(buffers) == 35 and sum(k.endswith("attn_mask") for k in buffers) == 11
    config = SwinConfig.from_pretrained("swin_l_384")
    model = SwinTransformer(config)
    shapes = {p.name: tuple(p.shape) for p in model.get_parameters()}
    assert shapes == expected_shapes(config)
    torch_names = to_torch_swin_state_dict({PREFIX + k: k for k in shapes})
    assert {name: shapes[ours] for name, ours in torch_names.items()} == \
        {k: v for k, v in expected.items() if not is_swin_buffer(k)}
    assert sum(int(np.prod(s)) for s in shapes.values()) == 195_198_516  # docs/ram.md#swin-encoder
    shifted = [b for layer in model.layers for b in layer.blocks if b.attn_mask is not None]
    assert [tuple(b.attn_mask.shape) for b in shifted[:3]] == [(64, 144, 144), (16, 144, 144), (4, 144, 144)]
    assert len(shifted) == 11 and model.layers[3].blocks[1].shift_size == 0  # stage 3: global attention


@pytest.mark.parametrize("keys,arch", [("ram_plus_swin_l", "swin_l_384"), ("ram_swin_b", "swin_b_384"),
                                       ("ram_plus_swin_b", "swin_b_384")])
def test_config_is_inferred_from_checkpoint_shapes(keys, arch):
    shapes = tsv_shapes(keys)
    fake = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}  # shapes only, no memory
    assert config_from_state_dict(fake) == SwinConfig.from_pretrained(arch)
    with pytest.raises(CheckpointError, match="window_size=5"):
        fake[PREFIX + "layers.0.blocks.0.attn.relative_position_bias_table"] = np.zeros((81, 6), np.float32)
        config_from_state_dict(fake)
    with pytest.raises(CheckpointError, match="patch_embed.proj.weight"):
        config_from_state_dict({})


@pytest.mark.parametrize("name,size,embed,heads,window,width,tokens", [
    ("swin_l_384", 384, 192, [6, 12, 24, 48], 12, 1536, 145),
    ("config_swinL_224", 224, 192, [6, 12, 24, 48], 7, 1536, 50),
    ("swin_b_384", 384, 128, [4, 8, 16, 32], 12, 1024, 145),
    ("swin_b_224", 224, 128, [4, 8, 16, 32], 7, 1024, 50)])
def test_ram_configs(name, size, embed, heads, window, width, tokens):
    c = SwinConfig.from_pretrained(name)
    assert (c.image_size, c.embed_dim, c.depths, c.num_heads, c.window_size) == \
        (size, embed, [2, 2, 18, 2], heads, window)
    assert (c.num_features, c.num_tokens, c.patch_size, c.qkv_bias, c.ape, c.patch_norm) == \
        (width, tokens, 4, True, False, True)
    assert [(s.window_size, s.shift_size) for s in c.stages()] == [(window, window // 2)] * 3 + [(window, 0)]


def test_tiny_output_is_pooled_token_then_tokens():
    config = SwinConfig.from_dict(TINY)
    out = build(config)(pixels(config)).asnumpy()
    assert out.shape == (2, 1 + 8 * 8, 32) == (2, config.num_tokens, config.num_features)
    np.testing.assert_allclose(out[:, 0], out[:, 1:].mean(axis=1), atol=1e-6)


def test_graph_mode_equals_pynative():
    config = SwinConfig.from_dict(dict(TINY, ape=True))
    model = build(config)
    x = pixels(config, batch=3)
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        eager = model(x).asnumpy()
        graph = run_in_graph_mode(model, x).asnumpy()
        assert ms.get_context("mode") == ms.PYNATIVE_MODE
    finally:
        ms.set_context(mode=previous)
    np.testing.assert_allclose(graph, eager, atol=1e-6, rtol=0)


@pytest.mark.usefixtures("kernel_lib")
@pytest.mark.parametrize("qk_scale", [None, 0.5])
def test_fused_window_attention_equals_the_op_by_op_path(qk_scale):
    """Inference runs each window attention (relative-position bias, and the shift mask on odd blocks) as one
    kernel; its output equals the op-by-op path's (taken by training graphs), with qk_scale given or not."""
    from mindram.models.swin.modeling import WindowAttention
    config = SwinConfig.from_dict(dict(TINY, qk_scale=qk_scale))
    model = build(config)
    attentions = [cell for _, cell in model.cells_and_names() if isinstance(cell, WindowAttention)]
    calls = []
    for attn in attentions:
        assert attn.use_fused
        for name in ("fused", "fused_masked"):
            kernel = getattr(attn, name)
            setattr(attn, name, lambda *args, kernel=kernel, name=name: calls.append(name) or kernel(*args))
    x = pixels(config, batch=3)
    fused = model(x).asnumpy()
    assert calls.count("fused") == 2 and calls.count("fused_masked") == 2   # stage 1: plain + shifted; stage 2 too
    for attn in attentions:
        attn.use_fused = False
    np.testing.assert_allclose(fused, model(x).asnumpy(), atol=1e-5, rtol=0)


@pytest.mark.usefixtures("kernel_lib")
@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE], ids=["pynative", "graph"], indirect=True)
def test_fused_window_attention_has_the_op_by_op_gradient(mode):
    """A model differentiated outside training (saliency, a frozen-mode step) goes through the fused kernels:
    their gradient (built-in ops) equals the op-by-op path's, for the input, the bias table and every weight."""
    from mindram.models.swin.modeling import WindowAttention
    config = SwinConfig.from_dict(TINY)
    model = build(config)
    x = pixels(config, batch=2)
    grads = []
    for use_fused in (True, False):
        for _, cell in model.cells_and_names():
            if isinstance(cell, WindowAttention):
                cell.use_fused = use_fused
        loss = _SquaredOutput(model)
        input_grad, weight_grads = ms.grad(loss, grad_position=0, weights=model.trainable_params())(x)
        grads.append([input_grad.asnumpy()] + [g.asnumpy() for g in weight_grads])
    for fused_grad, plain_grad in zip(*grads):
        np.testing.assert_allclose(fused_grad, plain_grad, atol=1e-4 * max(1.0, float(np.abs(plain_grad).max())))


class _SquaredOutput(ms.nn.Cell):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def construct(self, x):
        return (self.model(x) ** 2).sum()


FIELD_CHANGES = [("image_size", 64), ("patch_size", 4), ("in_chans", 4), ("embed_dim", 8), ("depths", [1, 2]),
                 ("num_heads", [1, 2]), ("window_size", 8), ("mlp_ratio", 2.0), ("qkv_bias", False),
                 ("qk_scale", 0.5), ("ape", True), ("patch_norm", False), ("drop_path_rate", 0.5),
                 ("layer_norm_eps", 1e-1)]


def test_field_list_is_complete():
    assert sorted(k for k, _ in FIELD_CHANGES) == sorted(SwinConfig.field_names())


@pytest.mark.parametrize("key,value", FIELD_CHANGES, ids=[k for k, _ in FIELD_CHANGES])
def test_every_config_field_changes_the_network(key, value):
    """Same weights wherever the shapes agree; the output must still change (drop_path in training)."""
    base = SwinConfig.from_dict(dict(TINY, drop_path_rate=0.0))
    changed = base.replace(**{key: value})
    ref, out = build(base), build(changed, seed=1)
    assert {k: v.shape for k, v in params_of(out).items()} == expected_shapes(changed)
    shared = {k: v for k, v in params_of(ref).items() if k in params_of(out) and params_of(out)[k].shape == v.shape}
    load_state_dict(out, shared, strict=False)
    same_shapes = {k: v.shape for k, v in params_of(ref).items()} == {k: v.shape for k, v in params_of(out).items()}
    training = key == "drop_path_rate"
    ref.set_train(training)
    out.set_train(training)
    a, b = ref(pixels(base)).asnumpy(), out(pixels(changed)).asnumpy()
    assert not same_shapes or a.shape != b.shape or not np.allclose(a, b, atol=1e-5)


def test_drop_path_is_identity_at_inference():
    config = SwinConfig.from_dict(dict(TINY, drop_path_rate=0.5))
    model = build(config)
    x = pixels(config)
    plain = build(config.replace(drop_path_rate=0.0))
    load_state_dict(plain, params_of(model))
    np.testing.assert_array_equal(model(x).asnumpy(), plain(x).asnumpy())


@pytest.mark.parametrize("changes,match", [
    (dict(image_size=40, patch_size=4), r"grid 10x10 is not a multiple of window_size=4"),
    (dict(image_size=36, patch_size=4, window_size=9), r"grid 9x9 is odd"),
    (dict(num_heads=[3, 4]), r"width 16 is not divisible by num_heads\[0\]=3"),
    (dict(depths=[2, 2, 2]), r"differ in length"),
    (dict(depths=[2, 0]), r"depths: expected a non-empty list of positive ints"),
    (dict(drop_path_rate=1.0), r"drop_path_rate"),
    (dict(window_size="4"), r"window_size: expected int"),
    (dict(hidden_size=4), r"unknown key\(s\) \['hidden_size'\]"),
])
def test_config_errors_name_the_key(changes, match):
    with pytest.raises(ConfigError, match=match):
        SwinConfig.from_dict(dict(TINY, **changes))


def test_wrong_image_size_is_an_error():
    """Other sizes run (tests/unit/test_swin_resolution.py); sides that are not multiples of the patch do not."""
    config = SwinConfig.from_dict(TINY)
    with pytest.raises(ValueError, match=r"positive multiples of patch_size=2 .*got 35x36"):
        build(config)(Tensor(np.zeros((1, 3, 35, 36), np.float32)))


def test_unknown_architecture_lists_closest():
    with pytest.raises(KeyError, match="swin_l_384"):
        SwinConfig.from_pretrained("swin_l_38")


def test_converter_round_trip_and_dropped_keys():
    config = SwinConfig.from_dict(TINY)
    ours = {PREFIX + k: v for k, v in params_of(build(config)).items()}
    torch_sd = to_torch_swin_state_dict(ours)
    assert "visual_encoder.layers.0.blocks.1.mlp.fc1.weight" in torch_sd
    assert not any(".c_fc." in k or ".c_proj." in k for k in torch_sd)
    extra = {PREFIX + "layers.0.blocks.1.attn_mask": np.zeros((16, 16, 16), np.float32),
             PREFIX + "layers.0.blocks.0.attn.relative_position_index": np.zeros((16, 16), np.int64),
             "image_proj.weight": np.zeros((2, 32), np.float32)}
    back = convert_swin_state_dict({**torch_sd, **extra})
    assert back.keys() == ours.keys()
    assert all(np.array_equal(back[k], ours[k]) for k in ours)


def test_window_helpers():
    # relative_position_index spans the (2w-1)^2 table; the diagonal is the centre entry
    index = relative_position_index(3)
    assert index.min() == 0 and index.max() == 24 and set(np.diag(index)) == {12}
    # shift + partition is a permutation; the mask separates the wrapped-around regions only
    order = window_order(8, 4, 2)
    assert sorted(order) == list(range(64)) and order[0] == 2 * 8 + 2
    mask = shifted_window_mask(8, 4, 2)
    assert mask.shape == (4, 16, 16) and not mask[0].any() and set(np.unique(mask)) == {0.0, -100.0}


def test_config_save_and_reload(tmp_path):
    config = SwinConfig.from_pretrained("config_swinB_224").replace(qk_scale=0.125)
    config.save(tmp_path / "swin.yaml")
    assert SwinConfig.from_pretrained(tmp_path / "swin.yaml") == config
    assert "swin_l_384" in SwinConfig.show_support_list()


def test_gradients_reach_every_parameter():
    config = SwinConfig.from_dict(dict(TINY, drop_path_rate=0.0))
    model = build(config)
    model.set_train(True)
    x = pixels(config)

    def loss_fn(inputs):
        return model(inputs).square().mean()

    _, grads = ms.value_and_grad(loss_fn, None, model.trainable_params())(x)
    for param, grad in zip(model.trainable_params(), grads):
        g = grad.asnumpy()
        assert np.isfinite(g).all() and np.abs(g).max() > 0, param.name

"""CLIPModel on tiny configs: every registered architecture builds, every config field matters,
names/paths resolve, errors are clear."""
import numpy as np
import pytest
from mindspore import Tensor

import mindram
from mindram import catalog
from mindram.errors import CheckpointError, ConfigError
from mindram.models.clip.convert import (config_from_state_dict, convert_state_dict, expected_shapes,
                                         to_open_clip_state_dict)

ARCHS = catalog.architectures("clip")


def tiny(config, image_size=32, patch=8, width=32, layers=2):
    """Shrink a config, keeping what distinguishes the architecture (activation, mlp ratio, heads ratio)."""
    v, t = config.vision_config, config.text_config
    return config.replace(
        projection_dim=16,
        vision_config=v.replace(image_size=image_size, patch_size=patch, hidden_size=width, num_hidden_layers=layers,
                                num_attention_heads=2, intermediate_size=int(width * v.intermediate_size / v.hidden_size)),
        text_config=t.replace(vocab_size=49408, hidden_size=width, num_hidden_layers=layers, num_attention_heads=2,
                              intermediate_size=int(width * t.intermediate_size / t.hidden_size)))


def inputs(config, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    size = config.vision_config.image_size
    pixels = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    ids = mindram.tokenize(["a red square", "two dogs"][:batch] + ["x"] * max(0, batch - 2))
    return pixels, ids


def test_support_list_is_scanned_from_files():
    names = mindram.CLIPModel.show_support_list()
    for required in ["clip_vit_b_32", "clip_vit_b_16", "clip_vit_l_14", "clip_vit_l_14@336", "clip_vit_b_32_256",
                     "clip_vit_h_14", "clip_vit_bigg_14", "clip_vit_g_14", "clip_vit_h_14_378_quickgelu",
                     "clip_vit_b_32_quickgelu", "clip_vit_b_32.laion2b_s34b_b79k"]:
        assert required in names
    assert set(ARCHS) <= set(names)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_builds_tiny_and_runs(arch):
    config = mindram.CLIPConfig.from_yaml(catalog.arch_file("clip", arch))
    assert config.vision_config.hidden_act == ("quick_gelu" if "quickgelu" in arch else "gelu")
    small = tiny(config)
    model = mindram.CLIPModel(small)
    shapes = {p.name: tuple(p.shape) for p in model.get_parameters()}
    assert shapes == expected_shapes(small)
    pixels, ids = inputs(small)
    logits_per_image, logits_per_text = model(Tensor(pixels), Tensor(ids))
    assert logits_per_image.shape == (2, 2)
    np.testing.assert_allclose(logits_per_image.asnumpy(), logits_per_text.asnumpy().T, rtol=1e-6)
    assert model.get_image_features(pixels).shape == (2, 16)
    assert model.get_text_features(ids).shape == (2, 16)


def test_published_sizes():
    # ViT-B/32 has about 151.3M parameters (docs/clip.md#configurations)
    count = sum(int(np.prod(s)) for s in expected_shapes(mindram.CLIPConfig.from_pretrained("clip_vit_b_32")).values())
    assert abs(count - 151.28e6) < 0.1e6
    g14 = mindram.CLIPConfig.from_pretrained("clip_vit_g_14").vision_config
    big = mindram.CLIPConfig.from_pretrained("clip_vit_bigg_14").vision_config
    assert (g14.intermediate_size, g14.num_attention_heads) == (6144, 16)
    assert (big.intermediate_size, big.num_attention_heads) == (8192, 16)


def test_mindformers_names_mean_openai_weights():
    assert mindram.CLIPConfig.from_pretrained("clip_vit_b_32").vision_config.hidden_act == "quick_gelu"
    assert mindram.CLIPConfig.from_pretrained("clip_vit_b_32.laion2b_s34b_b79k").vision_config.hidden_act == "gelu"
    assert mindram.CLIPConfig.from_pretrained("ViT-L-14-336").vision_config.image_size == 336
    assert mindram.CLIPConfig.from_pretrained("clip_vit_l_14@336").text_config.hidden_size == 768


FIELD_CHANGES = [
    ("projection_dim", None, 24),
    ("logit_scale_init_value", None, 1.0),
    ("vision_config", "hidden_act", "gelu"),
    ("vision_config", "intermediate_size", 48),
    ("vision_config", "layer_norm_eps", 1e-1),
    ("vision_config", "num_attention_heads", 4),
    ("vision_config", "num_hidden_layers", 1),
    ("vision_config", "patch_size", 16),
    ("vision_config", "image_size", 48),
    ("vision_config", "hidden_size", 64),
    ("text_config", "hidden_act", "gelu"),
    ("text_config", "intermediate_size", 48),
    ("text_config", "layer_norm_eps", 1e-1),
    ("text_config", "num_attention_heads", 4),
    ("text_config", "num_hidden_layers", 1),
    ("text_config", "hidden_size", 64),
    ("text_config", "max_position_embeddings", 40),
]


@pytest.mark.parametrize("section,key,value", FIELD_CHANGES, ids=[f"{s}.{k}" for s, k, _ in FIELD_CHANGES])
def test_every_config_field_changes_the_network(section, key, value):
    """A field the model ignored would leave outputs and parameter shapes unchanged (MindFormers' bug)."""
    base = tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32_quickgelu"))
    changed = base.replace(**{section: value}) if key is None else \
        base.replace(**{section: getattr(base, section).replace(**{key: value})})
    pixels, ids = inputs(base)
    ref = mindram.CLIPModel(base)
    out = mindram.CLIPModel(changed)
    shared = {k: v for k, v in ref.state_dict().items() if k in out.state_dict() and k != "logit_scale"
              and out.state_dict()[k].shape == v.shape}
    out.load_weights(shared, strict=False)
    ids = ids[:, :changed.text_config.max_position_embeddings]
    px = pixels if changed.vision_config.image_size == 32 else np.resize(pixels, (2, 3, 48, 48)).astype(np.float32)
    same_shapes = {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in out.state_dict().items()}
    a = [ref(Tensor(pixels), Tensor(ids))[0].asnumpy()]
    b = [out(Tensor(px), Tensor(ids))[0].asnumpy()]
    assert not same_shapes or not np.allclose(a, b, atol=1e-6)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['hidden_dim'\]"):
        mindram.CLIPConfig.from_dict({"hidden_dim": 3})
    with pytest.raises(ConfigError, match=r"vision_config.*hidden_size.*expected int, got '768'"):
        mindram.CLIPConfig.from_dict({"vision_config": {"hidden_size": "768"}})
    with pytest.raises(ConfigError, match="hidden_act: unknown activation 'swish'"):
        mindram.CLIPConfig.from_dict({"text_config": {"hidden_act": "swish"}})
    with pytest.raises(ConfigError, match="not divisible"):
        mindram.CLIPConfig.from_dict({"text_config": {"hidden_size": 30, "num_attention_heads": 4}})
    with pytest.raises(ConfigError, match="trim_padding"):
        mindram.CLIPConfig.from_dict({"text_config": {"trim_padding": "yes"}})


def test_large_image_batches_run_in_micro_batches(monkeypatch):
    """``vision_config.max_batch_tokens`` splits ``get_image_features`` into power-of-two calls (17 tokens per
    image here: 2 images per call under 40 tokens), with the features of one call."""
    import mindram.models.clip.modeling as modeling
    config = tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32_quickgelu"))
    whole = mindram.CLIPModel(config.replace(vision_config=config.vision_config.replace(max_batch_tokens=None)))
    split = mindram.CLIPModel(config.replace(vision_config=config.vision_config.replace(max_batch_tokens=40)))
    split.load_weights(whole.state_dict())
    pixels = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    calls = []
    run = modeling.run_in_graph_mode
    monkeypatch.setattr(modeling, "run_in_graph_mode", lambda cell, x: calls.append(x.shape[0]) or run(cell, x))
    expected = whole.get_image_features(pixels).asnumpy()
    assert calls == [5]
    got = split.get_image_features(pixels).asnumpy()
    assert calls == [5, 2, 2, 1] and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="max_batch_tokens"):
        mindram.CLIPConfig.from_dict({"vision_config": {"max_batch_tokens": 0}})


def test_unknown_name_lists_closest():
    with pytest.raises(KeyError, match="clip_vit_b_32"):
        mindram.CLIPModel.from_pretrained("clip_vit_b32")


def test_missing_checkpoint_error_says_what_to_convert(tmp_path, monkeypatch):
    monkeypatch.setenv("MINDRAM_HOME", str(tmp_path))
    with pytest.raises(CheckpointError) as info:
        mindram.CLIPModel.from_pretrained("clip_vit_b_32")
    message = str(info.value)
    assert str(tmp_path / "clip" / "clip_vit_b_32.ckpt") in message
    assert "OpenAI ViT-B-32.pt" in message and "convert_weights/convert_clip.py" in message


def test_save_and_from_pretrained_round_trip(tmp_path, monkeypatch):
    config = tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_16"))
    model = mindram.CLIPModel(config)
    pixels, ids = inputs(config)
    expected = model.get_image_features(pixels).asnumpy()
    model.save_pretrained(tmp_path / "saved")
    loaded = mindram.CLIPModel.from_pretrained(tmp_path / "saved")
    assert loaded.config == config
    np.testing.assert_array_equal(loaded.get_image_features(pixels).asnumpy(), expected)
    # a name resolves to $MINDRAM_HOME/clip/<file>; a plain .ckpt infers its config from shapes
    monkeypatch.setenv("MINDRAM_HOME", str(tmp_path))
    (tmp_path / "clip").mkdir()
    (tmp_path / "saved" / "model.ckpt").rename(tmp_path / "clip" / "clip_vit_b_16_quickgelu.ckpt")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        mindram.CLIPModel.from_pretrained("clip_vit_b_16_quickgelu")  # full-size config vs tiny weights


def test_inference_sees_weights_loaded_after_compilation():
    config = tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32"))
    model = mindram.CLIPModel(config)
    pixels, ids = inputs(config)
    before = model.get_text_features(ids).asnumpy()
    other = mindram.CLIPModel(config)
    model.load_weights(other.state_dict())
    after = model.get_text_features(ids).asnumpy()
    np.testing.assert_allclose(after, other.get_text_features(ids).asnumpy(), atol=1e-6)
    assert not np.allclose(before, after)


def test_converter_functions_round_trip_and_infer():
    config = tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32"))
    params = mindram.CLIPModel(config).state_dict()
    torch_layout = to_open_clip_state_dict(params)
    assert "token_embedding.weight" in torch_layout and "visual.conv1.weight" in torch_layout
    back = convert_state_dict({**torch_layout, "attn_mask": np.zeros((77, 77)), "input_resolution": np.array(224)})
    assert set(back) == set(params)
    inferred = config_from_state_dict(back, hidden_act="quick_gelu")
    assert inferred.vision_config.num_hidden_layers == 2 and inferred.vision_config.image_size == 32
    assert inferred.text_config.hidden_act == "quick_gelu"


def test_ckpt_loads_when_memory_sits_in_the_page_cache(tmp_path, monkeypatch):
    """MindSpore's load_checkpoint refuses a .ckpt larger than the *free* pages (page cache not counted); mindram
    reads .ckpt files itself, one tensor at a time, so a machine whose memory sits in the page cache loads them."""
    import os

    from mindram.models.modeling_utils import read_checkpoint, write_checkpoint
    write_checkpoint({"w": np.ones((512, 512), np.float32)}, tmp_path / "x.ckpt")
    real = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda name: 1 if name == "SC_AVPHYS_PAGES" else real(name))
    assert read_checkpoint(tmp_path / "x.ckpt")["w"].shape == (512, 512)


def test_float16_compute_is_close_to_float32():
    config = tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32"))
    full = mindram.CLIPModel(config)
    half = mindram.CLIPModel(config.replace(compute_dtype="float16"))
    half.load_weights(full.state_dict())
    pixels, ids = inputs(config)
    out = half.get_image_features(pixels).asnumpy()
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, full.get_image_features(pixels).asnumpy(), atol=2e-2)
    np.testing.assert_allclose(half.get_text_features(ids).asnumpy(), full.get_text_features(ids).asnumpy(), atol=2e-2)
    with pytest.raises(ConfigError, match="bfloat16"):
        config.replace(compute_dtype="bfloat16")

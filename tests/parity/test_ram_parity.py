"""RAM / RAM++ parity with recognize-anything on golden fixtures (tests/fixtures/ram/make_fixtures.py).

The reference models (reduced Swin + reduced Q2L head, 32 real tags incl. threshold-1.0 tags and
Chinese names with trailing spaces, seeded weights) wrote their state dicts, inputs and outputs;
here the state dicts go through ``convert_state_dict`` into mindram models and every output is
compared: encoder tokens, tag logits (≤ 1e-4), the EN/CN ``generate_tag`` strings (identical),
the tagging head alone on the reference's encoder output, and RAM's caption modules.
"""
import functools

import numpy as np
import pytest
from mindspore import Tensor

import mindram.models.ram as ram
from mindram.models.modeling_utils import load_state_dict
from mindram.models.ram.convert import convert_state_dict, to_torch_state_dict
from tests.fixtures.ram.loader import expected, fixture_config, inputs, reference_state_dict

TOL = 1e-4
MODELS = {"ram": ram.RAM, "ram_plus": ram.RAMPlus}


@functools.lru_cache(maxsize=None)
def build(model_type):
    """(model_type, model loaded with the converted reference weights, converted params, converter report)."""
    config = fixture_config(model_type)
    params, report = convert_state_dict(reference_state_dict(model_type), config)
    model = MODELS[model_type](config)
    model.load_weights(params)  # strict: every parameter present, nothing unexpected
    model.set_train(False)
    return model_type, model, params, report


@pytest.fixture(params=sorted(MODELS))
def converted(request):
    return build(request.param)


def test_logits_and_tags_match_reference(converted):
    model_type, model, _, _ = converted
    out, strings = expected(model_type)
    pixels = inputs()["pixel_values"]
    pynative = model(Tensor(pixels)).asnumpy()
    graph = model.get_tag_logits(pixels)
    for logits in (pynative, graph):
        assert np.abs(logits - out["logits"]).max() <= TOL
    en, cn = model.generate_tag(pixels)
    assert en == strings["en"] and cn == strings["cn"]
    assert all(en) and len(set(en)) == 2  # non-trivial fixture: tags on both images, different ones


def test_encoder_tokens_match_reference(converted):
    model_type, model, _, _ = converted
    out, _ = expected(model_type)
    tokens = model.visual_encoder(Tensor(inputs()["pixel_values"])).asnumpy()
    assert tokens.shape == out["image_embeds"].shape
    assert np.abs(tokens - out["image_embeds"]).max() <= TOL


def test_tagging_head_alone_on_reference_encoder_output(converted):
    model_type, _, params, _ = converted
    out, _ = expected(model_type)
    head = ram.RAMTaggingHead(fixture_config(model_type, caption_modules=False))
    head.set_train(False)
    own = {p.name for p in head.get_parameters()}
    load_state_dict(head, {k: v for k, v in params.items() if k in own})
    logits = head(Tensor(out["image_embeds"])).asnumpy()
    assert np.abs(logits - out["logits"]).max() <= TOL


def test_ram_caption_modules_match_reference():
    _, model, _, _ = build("ram")
    out, _ = expected("ram")
    data = inputs()
    ids, mask = Tensor(data["input_ids"]), Tensor(data["attention_mask"])
    tokens = model.image_proj(Tensor(out["image_embeds"]))
    encoded = model.tag_encoder(ids, tokens, mask)
    assert np.abs(encoded.asnumpy() - out["tag_encoder_out"]).max() <= TOL
    logits = model.text_decoder(ids, Tensor(out["tag_encoder_out"]), mask).asnumpy()
    assert np.abs(logits - out["decoder_logits"]).max() <= TOL


def test_converter_drops_buffers_and_aliases_and_inverts(converted):
    model_type, model, params, report = converted
    sd = reference_state_dict(model_type)
    buffers = [k for k in sd if k.endswith(("relative_position_index", "attn_mask", "position_ids"))]
    assert sorted(report["buffers"]) == sorted(buffers) and report["caption_modules"] == []
    head_layers = model.config.head_config.num_hidden_layers
    assert len(report["aliases"]) == (16 * head_layers + 2 if model_type == "ram" else 0)
    assert set(params) == {p.name for p in model.get_parameters()}
    back = to_torch_state_dict(params, model.config)
    assert set(back) == set(sd) - set(buffers)
    for key, value in back.items():
        np.testing.assert_array_equal(np.asarray(value, np.float32).reshape(np.shape(sd[key])), sd[key], err_msg=key)

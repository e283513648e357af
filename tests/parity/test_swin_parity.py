"""Swin parity with recognize-anything's ``SwinTransformer`` through golden fixtures (no torch needed).

``tests/fixtures/swin/make_fixtures.py`` wrote the reference's state dicts (RAM prefix
``visual_encoder.``, buffers included), inputs and outputs; here they go through the converter into
mindram's :class:`SwinTransformer` — held under ``visual_encoder`` as RAM holds it, or bare — and the
outputs must match in PyNative and graph mode.
"""
import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn
from safetensors.numpy import load_file

from mindram.models.modeling_utils import load_state_dict
from mindram.models.swin import SwinConfig, SwinTransformer, convert_swin_state_dict, is_swin_buffer
from mindram.utils.graph import run_in_graph_mode

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "swin"
CASES = ["shifted_4stage", "variant_fields"]
PREFIX = "visual_encoder."
TOL = 1e-4


class Holder(nn.Cell):
    """The Swin under the attribute RAM gives it, so names carry the ``visual_encoder.`` prefix."""

    def __init__(self, config):
        super().__init__()
        self.visual_encoder = SwinTransformer(config)

    def construct(self, pixel_values):
        return self.visual_encoder(pixel_values)


def load_case(name):
    meta = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    tensors = load_file(str(FIXTURES / f"{name}.safetensors"))
    pixels, expected = tensors.pop("pixel_values"), tensors.pop("expected_output")
    return SwinConfig.from_dict(meta["swin_config"]), tensors, pixels, expected


@pytest.fixture(scope="module", params=CASES)
def case(request):
    config, weights, pixels, expected = load_case(request.param)
    model = Holder(config)
    load_state_dict(model, convert_swin_state_dict(weights), source=request.param)  # strict
    model.set_train(False)
    return model, weights, pixels, expected


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_output_matches_reference(case, mode):
    model, _, pixels, expected = case
    if mode == "graph":
        out = run_in_graph_mode(model, Tensor(pixels)).asnumpy()
    else:
        previous = ms.get_context("mode")
        ms.set_context(mode=ms.PYNATIVE_MODE)
        try:
            out = model(Tensor(pixels)).asnumpy()
        finally:
            ms.set_context(mode=previous)
    assert out.shape == expected.shape
    diff = float(np.abs(out - expected).max())
    assert diff <= TOL, f"max-abs-diff {diff:.3g}"


def test_recomputed_buffers_equal_the_reference_buffers(case):
    """relative_position_index and attn_mask are dropped by the converter because the model rebuilds
    them; they must equal what the reference registered."""
    model, weights, _, _ = case
    buffers = {k: v for k, v in weights.items() if is_swin_buffer(k)}
    assert buffers and not set(buffers) & set(convert_swin_state_dict(weights))
    seen = 0
    for i, layer in enumerate(model.visual_encoder.layers):
        for j, block in enumerate(layer.blocks):
            name = f"{PREFIX}layers.{i}.blocks.{j}."
            index = buffers.pop(name + "attn.relative_position_index")
            np.testing.assert_array_equal(block.attn.relative_position_index.asnumpy(), index.reshape(-1))
            mask = buffers.pop(name + "attn_mask", None)
            assert (mask is None) == (block.attn_mask is None), name
            if mask is not None:
                np.testing.assert_array_equal(block.attn_mask.asnumpy(), mask)
                seen += 1
    assert not buffers and seen >= 2


def test_bare_state_dict_loads_with_empty_prefix():
    """A Swin state dict without the RAM prefix (e.g. ImageNet Swin weights) maps with ``prefix=''``."""
    config, weights, pixels, expected = load_case("variant_fields")
    bare = {k[len(PREFIX):]: v for k, v in weights.items()}
    model = SwinTransformer(config)
    load_state_dict(model, convert_swin_state_dict(bare, prefix=""))
    model.set_train(False)
    assert np.abs(model(Tensor(pixels)).asnumpy() - expected).max() <= TOL

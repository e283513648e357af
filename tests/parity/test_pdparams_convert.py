"""PaddleMIX ``.pdparams`` → mindram: a pickled {name: ndarray} in PaddleMIX's names (Linear weights (in, out),
separate q/k/v projections, Paddle's structured-name table), written from open_clip's random ViT-B/32, converts
torch-free to features equal to open_clip's (<= 1e-4); PaddleMIX ids resolve; nothing in the pickle runs."""
import os
import pickle

import numpy as np
import pytest

import mindram
from mindram.errors import CheckpointError, UnsafeCheckpointError
from mindram.models.clip.convert import from_paddle, load_pdparams, main
from tests.parity.clip_reference import encode, random_pixels, reference_model

TOL = 1e-4
TEXTS = ["a photo of a cat", "a diagram of a transformer block", "", "猫 & dog's toy 42"]
LINEARS = (".attn.out_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")


def paddlemix_state_dict(model):
    """open_clip weights renamed and laid out as PaddleMIX's CLIP saves them (module docstring)."""
    out, table = {}, {}
    for key, value in model.state_dict().items():
        value = value.detach().numpy()
        if key == "attn_mask":
            continue  # a non-persistable buffer in PaddleMIX
        if ".attn.in_proj_" in key:
            base, kind = key.split(".attn.in_proj_")
            for part, chunk in zip("qkv", np.split(value, 3, axis=0)):
                out[f"{base}.attn.{part}_proj.{kind}"] = chunk.T.copy() if kind == "weight" else chunk.copy()
        else:
            out[key] = value.T.copy() if key.endswith(LINEARS) else value.copy()
    for i, key in enumerate(out):
        table[key] = f"param_{i}"
    out["StructuredToParameterName@@"] = table  # what paddle.save adds to a state dict
    return out


@pytest.mark.slow
def test_pdparams_of_paddlemix_converts_to_open_clip_features(tmp_path):
    ref = reference_model("ViT-B-32")
    folder = tmp_path / "CLIP-ViT-B-32-laion2B-s34B-b79K"   # PaddleMIX's download folder of that model id
    folder.mkdir()
    with open(folder / "model_state.pdparams", "wb") as f:
        pickle.dump(paddlemix_state_dict(ref), f, protocol=4)
    target = tmp_path / "converted.safetensors"
    assert main(["--torch_path", str(folder), "--mindspore_path", str(target)]) == 0
    model = mindram.CLIPModel.from_pretrained(target)
    assert model.config.vision_config.hidden_act == "gelu"  # open_clip ViT-B-32 (the folder's weights record)
    pixels = random_pixels(2, 224)
    ids = mindram.tokenize(TEXTS[:2])
    ref_img, ref_txt = encode(ref, pixels, ids)
    img, txt = model.get_image_features(pixels).asnumpy(), model.get_text_features(ids).asnumpy()
    assert np.abs(img - ref_img).max() <= TOL and np.abs(txt - ref_txt).max() <= TOL


def test_paddlemix_ids_resolve_and_dfn2b_rows():
    for name, record, act in (("paddlemix/CLIP/CLIP-ViT-L-14-laion2B-s32B-b82K", "clip_vit_l_14.laion2b_s32b_b82k",
                               "gelu"),
                              ("CLIP-ViT-B-16-DataComp.XL-s13B-b90K", "clip_vit_b_16.datacomp_xl_s13b_b90k", "gelu"),
                              ("paddlemix/CLIP/DFN2B-CLIP-ViT-L-14", "clip_vit_l_14.dfn2b", "quick_gelu"),
                              ("DFN2B-CLIP-ViT-B-16", "clip_vit_b_16.dfn2b", "quick_gelu")):
        assert mindram.catalog.resolve("clip", name).name == record
        assert mindram.CLIPConfig.from_pretrained(name).vision_config.hidden_act == act
    processor = mindram.CLIPImageProcessor.from_pretrained("clip_vit_l_14.dfn2b")  # open_clip's default for DFN2B
    assert (processor.resize_mode, processor.interpolation) == ("shortest", "bicubic")
    with pytest.raises(mindram.errors.ConfigError, match="model path does not exist"):
        mindram.catalog.resolve("clip", "paddlemix/CLIP/no-such-model")


def test_paddle_layouts_and_unsafe_pickles(tmp_path):
    bits = np.array([0x3F80, 0xC000], np.uint16)                       # bfloat16 1.0, -2.0 as Paddle stores them
    w = {f"visual.transformer.resblocks.0.attn.{p}_proj.weight": np.eye(2, dtype=np.float32) * (i + 1)
         for i, p in enumerate("qkv")}
    out = from_paddle({"logit_scale": bits, **w, "visual.transformer.resblocks.0.attn.q_proj.bias": np.ones(2),
                       "visual.transformer.resblocks.0.attn.v_proj.bias": np.ones(2)})
    np.testing.assert_array_equal(out["logit_scale"], [1.0, -2.0])
    np.testing.assert_array_equal(from_paddle({"ln_final.bias": ("layer_norm_0.b_0", np.ones(2))})["ln_final.bias"],
                                  [1, 1])  # paddle.save of a bare Tensor: (parameter name, array)
    assert out["visual.transformer.resblocks.0.attn.in_proj_weight"].shape == (6, 2)
    np.testing.assert_array_equal(out["visual.transformer.resblocks.0.attn.in_proj_bias"], [1, 1, 0, 0, 1, 1])
    with pytest.raises(CheckpointError, match="qkv_proj"):
        from_paddle({"transformer.resblocks.0.attn.qkv_proj.weight": np.zeros((2, 6))})

    class Payload:
        def __reduce__(self):
            return os.system, ("echo pwned > " + str(tmp_path / "pwned"),)
    bad = tmp_path / "model_state.pdparams"
    bad.write_bytes(pickle.dumps({"w": Payload()}))
    with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system|refused"):
        load_pdparams(bad)
    assert not (tmp_path / "pwned").exists()

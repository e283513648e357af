"""CLIP parity with open_clip 3.3.0 on identical random weights, moved through the converter.

Each case writes the reference weights in one of the formats users have (open_clip .bin/.pth,
state_dict wrappers with ``module.`` prefixes, .safetensors, OpenAI TorchScript, Hugging Face
folders), converts them with ``convert_file`` and compares features with open_clip's.
"""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import mindram
from mindram.losses import ClipLoss
from mindram.models.clip.convert import convert_file
from tests.parity.clip_reference import encode, hf_state_dict, random_pixels, reference_model

TOL = 1e-4
TEXTS = ["a photo of a cat", "a diagram of a transformer block, drawn by hand", "", "🐱 猫 &amp; dog's toy 42"]


def _write(model, fmt, folder):
    sd = {k: v for k, v in model.state_dict().items()}
    if fmt == "bin":
        path = folder / "open_clip_pytorch_model.bin"
        torch.save(sd, path)
    elif fmt == "wrapped_pt":
        path = folder / "epoch_3.pt"
        torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    elif fmt == "pth":
        path = folder / "weights.pth"
        torch.save(sd, path)
    elif fmt == "safetensors":
        path = folder / "open_clip_model.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items() if k != "attn_mask"}, str(path))
    elif fmt == "torchscript":
        path = folder / "ViT-openai.pt"
        model.attn_mask = model.attn_mask  # the buffer is saved with the module, as in OpenAI's files
        scripted = torch.jit.trace_module(model, {"encode_image": torch.zeros(1, 3, *model.visual.image_size)},
                                          check_trace=False)
        torch.jit.save(scripted, str(path))
    elif fmt == "huggingface":
        path = folder / "hf-clip"
        path.mkdir()
        save_file(hf_state_dict(model), str(path / "model.safetensors"))
        act = "quick_gelu" if model.visual.transformer.resblocks[0].mlp.gelu.__class__.__name__ == "QuickGELU" \
            else "gelu"
        (path / "config.json").write_text(json.dumps({"architectures": ["CLIPModel"],
                                                      "vision_config": {"hidden_act": act},
                                                      "text_config": {"hidden_act": act}}))
    else:
        raise ValueError(fmt)
    return path


CASES = [  # open_clip name, file format, --model_name (None: infer), batch
    ("ViT-B-32", "bin", None, 4),
    ("ViT-B-32", "wrapped_pt", "clip_vit_b_32.laion2b_s34b_b79k", 2),
    ("ViT-B-32", "huggingface", None, 2),
    ("ViT-B-16", "safetensors", "clip_vit_b_16.laion2b_s34b_b88k", 2),
    ("ViT-B-32-quickgelu", "torchscript", None, 2),
    ("ViT-B-32-quickgelu", "pth", "clip_vit_b_32", 2),
    ("ViT-L-14", "safetensors", None, 1),
]


@pytest.mark.parametrize("name,fmt,model_name,batch", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_features_match_open_clip(name, fmt, model_name, batch, tmp_path):
    ref = reference_model(name)
    source = _write(ref, fmt, tmp_path)
    # large models go to safetensors (the .ckpt protobuf is one message read whole into memory)
    target = tmp_path / ("converted.safetensors" if batch == 1 else "converted.ckpt")
    report = convert_file(source, target, model_name=model_name)
    assert report["missing"] == []
    model = mindram.CLIPModel.from_pretrained(target)
    expected_act = "quick_gelu" if "quickgelu" in name else "gelu"
    assert model.config.vision_config.hidden_act == expected_act, report

    size = model.image_size
    pixels = random_pixels(batch, size)
    ids = mindram.tokenize((TEXTS * batch)[:batch])
    ref_img, ref_txt = encode(ref, pixels, ids)
    img = model.get_image_features(pixels).asnumpy()
    txt = model.get_text_features(ids).asnumpy()
    assert img.shape == ref_img.shape and txt.shape == ref_txt.shape
    assert np.abs(img - ref_img).max() <= TOL, np.abs(img - ref_img).max()
    assert np.abs(txt - ref_txt).max() <= TOL, np.abs(txt - ref_txt).max()


def _text_features(ref, ids):
    with torch.no_grad():
        return ref.encode_text(torch.from_numpy(ids).long()).numpy()


def test_text_tower_skips_padding_with_open_clips_features(monkeypatch):
    """``text_config.trim_padding`` runs the text tower up to the batch's last EOT token only; the features stay
    open_clip's (which runs all 77 positions): one short prompt (8 positions: the swapped small-row GEMM), mixed
    lengths, a prompt that fills the context, a batch padded with the end-of-text id instead of zeros."""
    from mindram.models.clip import modeling
    from mindram.models.clip.modeling import text_length
    lengths = []   # the positions each call ran the tower on

    def spy(cell, ids):
        lengths.append(ids.shape[1])
        return run_in_graph_mode(cell, ids)

    run_in_graph_mode = modeling.run_in_graph_mode
    monkeypatch.setattr(modeling, "run_in_graph_mode", spy)
    ref = reference_model("ViT-B-32")
    model = mindram.CLIPModel(mindram.CLIPConfig.from_pretrained("clip_vit_b_32.laion2b_s34b_b79k"))
    model.load_weights(mindram.models.clip.convert.convert_state_dict(
        {k: v.numpy() for k, v in ref.state_dict().items()}))
    model.set_train(False)
    long_text = " ".join(f"word{i}" for i in range(100))
    eot_padded = mindram.tokenize(["two dogs on a sofa"])
    eot_padded[eot_padded == 0] = eot_padded.max()      # Hugging Face's openai tokenizer pads with <|endoftext|>
    cases = [(mindram.tokenize(["a photo of a cat"]), 8), (mindram.tokenize(TEXTS), 16),
             (mindram.tokenize(TEXTS[:2] + [long_text]), 77), (eot_padded, 8)]
    assert model.config.text_config.trim_padding
    for ids, length in cases:
        assert text_length(ids) == length
        expected = _text_features(ref, ids)
        trimmed = model.get_text_features(ids).asnumpy()
        assert lengths[-1] == length
        assert np.abs(trimmed - expected).max() <= TOL, np.abs(trimmed - expected).max()
    untrimmed = mindram.CLIPModel(model.config.replace(
        text_config=model.config.text_config.replace(trim_padding=False)))
    untrimmed.load_weights({p.name: p.asnumpy() for p in model.get_parameters()})
    ids = cases[1][0]
    full = untrimmed.get_text_features(ids).asnumpy()
    assert lengths[-1] == 77
    assert np.abs(full - model.get_text_features(ids).asnumpy()).max() <= 1e-5


def test_logits_and_loss_match_open_clip():
    ref = reference_model("ViT-B-32")
    params = mindram.models.clip.convert.convert_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    model = mindram.CLIPModel(mindram.CLIPConfig.from_pretrained("clip_vit_b_32.laion2b_s34b_b79k"))
    model.load_weights(params)
    model.set_train(False)
    pixels = random_pixels(4, 224, seed=3)
    ids = mindram.tokenize(TEXTS)
    with torch.no_grad():
        image_f, text_f, scale = ref(torch.from_numpy(pixels), torch.from_numpy(ids).long()).values() \
            if isinstance(ref(torch.zeros(1, 3, 224, 224), torch.zeros(1, 77).long()), dict) \
            else ref(torch.from_numpy(pixels), torch.from_numpy(ids).long())
        ref_loss = open_clip_loss()(image_f, text_f, scale).item()
        ref_logits = (scale * image_f @ text_f.T).numpy()
    from mindspore import Tensor
    logits_per_image, logits_per_text = model(Tensor(pixels), Tensor(ids))
    assert np.abs(logits_per_image.asnumpy() - ref_logits).max() <= TOL
    assert np.abs(logits_per_text.asnumpy() - ref_logits.T).max() <= TOL
    loss = ClipLoss()((logits_per_image, logits_per_text)).asnumpy()
    assert abs(float(loss) - ref_loss) <= TOL, (float(loss), ref_loss)


def open_clip_loss():
    from open_clip.loss import ClipLoss as RefLoss
    return RefLoss()

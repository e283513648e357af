"""recognize-anything scripts with only their imports changed (mindram.compat.recognize_anything) run on a tiny
RAM++ (the golden fixture's reference weights, as a .pth and as a converted .safetensors) and print exactly the
tags of mindram's own API; the open-set recipe (assigning label_embed/class_threshold) equals set_open_set_tags."""
import json
import runpy
import sys
import textwrap

import numpy as np
import pytest
import torch
from mindspore import Tensor
from PIL import Image

import mindram
from mindram.compat import recognize_anything as ra
from mindram.compat.recognize_anything import nn
from mindram.errors import ConfigError
from mindram.models.convert_utils import save_converted
from mindram.models.ram.convert import convert_state_dict
from tests.fixtures.ram.loader import fixture_config, reference_state_dict
from tests.unit.test_clip_model import tiny

# inference_ram_plus.py as its users write it; only the `from ram ...` imports changed
CLOSED_SET_SCRIPT = """
import argparse
import torch
from PIL import Image
from mindram.compat.recognize_anything import ram_plus
from mindram.compat.recognize_anything import inference_ram as inference
from mindram.compat.recognize_anything import get_transform

parser = argparse.ArgumentParser(description='RAM++ inference for tagging')
parser.add_argument('--image', metavar='DIR', default='images/demo/demo1.jpg')
parser.add_argument('--pretrained', metavar='DIR', default='pretrained/ram_plus_swin_large_14m.pth')
parser.add_argument('--image-size', default=384, type=int, metavar='N')

if __name__ == "__main__":
    args = parser.parse_args()
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    transform = get_transform(image_size=args.image_size)
    model = ram_plus(pretrained=args.pretrained, image_size=args.image_size, vit='swin_l')
    model.eval()
    model = model.to(device)
    image = transform(Image.open(args.image)).unsqueeze(0).to(device)
    res = inference(image, model)
    print("Image Tags: ", res[0])
    print("图像标签: ", res[1])
"""

# inference_ram_plus_openset.py; the torch `nn` import is the one that changes with the ram imports
OPEN_SET_SCRIPT = """
import argparse
import json
import numpy as np
import torch
from PIL import Image
from mindram.compat.recognize_anything import ram_plus
from mindram.compat.recognize_anything import inference_ram_openset as inference
from mindram.compat.recognize_anything import get_transform
from mindram.compat.recognize_anything import build_openset_llm_label_embedding
from mindram.compat.recognize_anything import nn

parser = argparse.ArgumentParser(description='RAM++ inference on unseen classes')
parser.add_argument('--image', metavar='DIR', default='images/openset_example.jpg')
parser.add_argument('--pretrained', metavar='DIR', default='pretrained/ram_plus_swin_large_14m.pth')
parser.add_argument('--image-size', default=384, type=int, metavar='N')
parser.add_argument('--llm_tag_des', metavar='DIR', default='datasets/openimages_rare_200/llm_tag_descriptions.json')

if __name__ == "__main__":
    args = parser.parse_args()
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    transform = get_transform(image_size=args.image_size)
    model = ram_plus(pretrained=args.pretrained, image_size=args.image_size, vit='swin_l')
    print('Building tag embedding:')
    with open(args.llm_tag_des, 'rb') as fo:
        llm_tag_des = json.load(fo)
    openset_label_embedding, openset_categories = build_openset_llm_label_embedding(llm_tag_des)
    model.tag_list = np.array(openset_categories)
    model.label_embed = nn.Parameter(openset_label_embedding.float())
    model.num_class = len(openset_categories)
    model.class_threshold = torch.ones(model.num_class) * 0.5
    model.eval()
    model = model.to(device)
    image = transform(Image.open(args.image)).unsqueeze(0).to(device)
    res = inference(image, model)
    print("Image Tags: ", res)
"""

DESCRIPTIONS = [{"Go-kart": ["a photo of a go-kart.", "a small open racing car", "a low four-wheeled vehicle"]},
                {"Bagpipes": ["a photo of a bagpipes.", "a wind instrument with a bag", "pipes played in Scotland"]},
                {"Falafel": ["a photo of a falafel.", "fried chickpea balls", "a street food from the Middle East"]},
                {"Full moon": ["a photo of a full moon.", "the bright round moon", "a moon phase at night"]}]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A demo image, the tiny RAM++ as a reference .pth (+ <stem>.yaml) and as a converted .safetensors."""
    root = tmp_path_factory.mktemp("ra")
    rng = np.random.default_rng(7)
    image = root / "demo.png"
    Image.fromarray(rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)).save(image)
    config = fixture_config("ram_plus", caption_modules=False)
    state = reference_state_dict("ram_plus")
    pth = root / "pretrained" / "ram_plus_tiny.pth"
    pth.parent.mkdir()
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, pth)
    config.save(pth.with_suffix(".yaml"))
    converted, _ = save_converted(convert_state_dict(state, config)[0], config, root / "ram_plus_tiny.safetensors")
    (root / "llm_tag_des.json").write_text(json.dumps(DESCRIPTIONS), encoding="utf-8")
    return {"root": root, "image": image, "pth": pth, "converted": converted, "config": config}


@pytest.fixture
def tiny_clip_b16(tmp_path, monkeypatch):
    """``clip_vit_b_16`` (the reference's open-set CLIP, the default) resolves to a tiny random CLIP here."""
    config = tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_16")).replace(projection_dim=512,
                                                                                 checkpoint_name_or_path=None)
    root = tmp_path / "catalog"
    (root / "clip" / "model").mkdir(parents=True)
    config.save(root / "clip" / "model" / "tiny_b16.yaml")
    (root / "clip" / "pretrained.yaml").write_text(
        "clip_vit_b_16:\n  default_tag: openai\n  tags:\n    openai: {arch: tiny_b16, file: clip_vit_b_16.ckpt}\n",
        encoding="utf-8")
    monkeypatch.setenv("MINDRAM_CATALOG", str(root))
    np.random.seed(4)  # the same random CLIP whatever ran before
    model = mindram.CLIPModel(config)
    home = tmp_path / "home"
    monkeypatch.setenv("MINDRAM_HOME", str(home))
    model.save_pretrained(tmp_path / "clip_dir")
    (home / "clip").mkdir(parents=True)
    (tmp_path / "clip_dir" / "model.ckpt").rename(home / "clip" / "clip_vit_b_16.ckpt")
    return "clip_vit_b_16"


def run_script(source, tmp_path, monkeypatch, capsys, *argv):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source), encoding="utf-8")
    monkeypatch.setattr(sys, "argv", [str(script), *argv])
    runpy.run_path(str(script), run_name="__main__")
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def own_api(files):
    """mindram's own API on the same weights and image: (RAMPlus, pixels)."""
    model = mindram.RAMPlus.from_pretrained(str(files["converted"]))
    return model, mindram.RAMImageProcessor(image_size=96)([str(files["image"])])


@pytest.mark.slow
def test_closed_set_script_prints_the_tags_of_mindrams_api(files, own_api, tmp_path, monkeypatch, capsys):
    """The reference .pth (converted in memory); the open-set test below loads the converted .safetensors."""
    out = run_script(CLOSED_SET_SCRIPT, tmp_path, monkeypatch, capsys, "--image", str(files["image"]),
                     "--pretrained", str(files["pth"]), "--image-size", "96")
    model, pixels = own_api
    en, cn = model.generate_tag(pixels)
    assert en[0]  # the fixture model tags this image: a non-trivial comparison
    assert out.splitlines() == [f"Image Tags:  {en[0]}", f"图像标签:  {cn[0]}"]


@pytest.mark.slow
def test_open_set_script_equals_set_open_set_tags(files, own_api, tiny_clip_b16, tmp_path, monkeypatch, capsys):
    out = run_script(OPEN_SET_SCRIPT, tmp_path, monkeypatch, capsys, "--image", str(files["image"]),
                     "--pretrained", str(files["converted"]), "--image-size", "96",
                     "--llm_tag_des", str(files["root"] / "llm_tag_des.json"))
    model, pixels = own_api
    tags = [next(iter(d)) for d in DESCRIPTIONS]
    with model.open_set_tags(tags, descriptions=DESCRIPTIONS, threshold=0.5, clip_model=tiny_clip_b16):
        scores = model.get_tag_scores(pixels)[0]
        tagged = model.generate_tag(pixels)[0][0]
    expected = " | ".join(t for t, s in zip(tags, scores) if s > 0.5)
    assert out.splitlines()[-1] == f"Image Tags:  {expected}" and tagged == expected
    assert expected  # open-set names were output (the logits themselves are compared in the next test)


@pytest.mark.slow
def test_open_set_assignments_are_checked_and_point_to_set_open_set_tags(files):
    model = ra.ram_plus(pretrained=str(files["converted"]), image_size=96, vit="swin_l")
    image = ra.get_transform(96)(Image.open(files["image"])).unsqueeze(0)
    model.tag_list = np.array(["a", "b", "c"])
    model.label_embed = np.zeros((7, 512), np.float32)   # 7 rows are not D descriptions for 3 tags
    model.class_threshold = np.full(3, 0.5)
    with pytest.raises(ConfigError, match="set_open_set_tags"):
        ra.inference_ram_openset(image, model)
    model.clear_open_set_tags()  # mindram's API drops the pending assignments
    assert model.num_class == 32 and len(model.vocabulary().names) == 32  # vocabulary() would sync (and raise)
    model2 = ra.ram_plus(pretrained=str(files["converted"]), image_size=96)
    model2.tag_list = np.array(["a", "b"])  # names without embeddings
    with pytest.raises(ConfigError, match="label_embed.*set_open_set_tags"):
        ra.inference_ram(image, model2)
    # thresholds alone stay a closed-set change: every tag at 1.0 never fires, at 0.0 always does
    model3 = ra.ram_plus(pretrained=str(files["converted"]), image_size=96)
    # the recipe with 3 tags x 2 descriptions gives exactly the logits of those (K, D, E) embeddings
    rows = np.random.default_rng(0).standard_normal((6, 512)).astype(np.float32)
    model3.tag_list, model3.num_class = np.array(["x", "y", "z"]), 3
    model3.label_embed, model3.class_threshold = nn.Parameter(Tensor(rows)), np.full(3, 0.5)
    recipe = model3.get_tag_logits(image)
    own = model3.model.get_tag_logits(image, Tensor(rows.reshape(3, 2, 512)))
    regrouped = model3.model.get_tag_logits(image, Tensor(rows.reshape(2, 3, 512).transpose(1, 0, 2).copy()))
    np.testing.assert_array_equal(recipe, own)
    assert recipe.shape == (1, 3) and not np.allclose(recipe, regrouped)
    model3.model.clear_open_set_tags()
    closed = ra.inference_ram(image, model3)
    model3.class_threshold = np.ones(model3.num_class)
    assert ra.inference_ram(image, model3) == ("", "")
    model3.class_threshold = np.zeros(model3.num_class)
    assert len(ra.inference_ram(image, model3)[0].split(" | ")) == 32 != len(closed[0].split(" | "))
    with pytest.raises(TypeError, match="only a device"):
        image.to(torch.float16)
    with pytest.raises(ConfigError, match="ram_plus weights"):
        ra.ram(pretrained=str(files["pth"]), image_size=96)

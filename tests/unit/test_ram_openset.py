"""Open-set tagging (docs/ram.md#open-set) with a tiny CLIP text tower: prompt/description texts, embeddings,
the installed vocabulary and thresholds, the on-disk cache, and the return to the closed set."""
import numpy as np
import pytest
from mindspore import Tensor

import mindram
import mindram.models.ram as ram
from mindram.errors import ConfigError, DataError
from mindram.models.ram import openset
from mindram.utils.io import mindram_home
from tests.fixtures.ram.loader import fixture_config
from tests.unit.test_clip_model import tiny

TAGS = ["Aerial photography", "apple", "ice_cream/sundae."]
DESCRIPTIONS = {"Aerial photography": ["a photo of a aerial photography.", "a picture taken from a plane"],
                "apple": ["a photo of a apple.", "a round red fruit"],
                "ice_cream/sundae.": ["a photo of a ice cream.", "a cold dessert " * 40]}  # long: truncated


@pytest.fixture(scope="module")
def clip():
    model = mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_16")))
    model.set_train(False)
    return model


def small(model_type):
    return fixture_config(model_type, label_embed_dim=16)


def test_ram_prompts_follow_the_reference_rules():
    prompts = openset.template_prompts("ice_cream/sundae.")
    assert len(prompts) == 63 == len(set(prompts))
    assert prompts[0] == "There is an ice cream or sundae in the scene."
    assert prompts[5] == "itap of an ice cream or sundae."
    assert prompts[8] == "This is a photo of an ice cream or sundae."
    assert openset.template_prompts("apple")[0] == "There is an apple in the scene."
    assert openset.template_prompts("Apple")[0] == "There is a apple in the scene."  # article from the raw name


def test_descriptions_in_every_accepted_form():
    lists = [DESCRIPTIONS[t] for t in TAGS]
    assert openset.description_texts(TAGS, DESCRIPTIONS) == lists
    assert openset.description_texts(TAGS, lists) == lists
    assert openset.description_texts(TAGS, [{t: DESCRIPTIONS[t]} for t in TAGS]) == lists  # reference JSON
    assert openset.description_texts(["Zeppelin"], None) == [["a photo of a zeppelin."]]
    with pytest.raises(DataError, match="no entry"):
        openset.description_texts(["dog"], DESCRIPTIONS)
    with pytest.raises(DataError, match="same number"):
        openset.description_texts(["a", "b"], [["x"], ["y", "z"]])


def test_ram_plus_open_set_embeddings_and_inference(clip, tmp_path):
    model = ram.RAMPlus(small("ram_plus"))
    pixels = np.random.default_rng(1).standard_normal((2, 3, 96, 96)).astype(np.float32)
    model.set_open_set_tags(TAGS, DESCRIPTIONS, clip_model=clip, cache=False)
    flat = [s for t in TAGS for s in DESCRIPTIONS[t]]
    feats = clip.get_text_features(mindram.tokenize(flat)).asnumpy()
    want = (feats / np.linalg.norm(feats, axis=-1, keepdims=True)).reshape(3, 2, 16)
    np.testing.assert_allclose(model.open_set_label_embed.asnumpy(), want, atol=1e-6)
    assert model.tag_list == TAGS == model.tag_list_chinese
    np.testing.assert_array_equal(model.class_threshold, np.full(3, 0.5, np.float32))
    logits = model(Tensor(pixels), model.open_set_label_embed).asnumpy()
    assert logits.shape == (2, 3)
    # the same math as a closed-set model whose checkpoint holds these 3 x 2 embeddings
    (tmp_path / "tags.txt").write_text("\n".join(TAGS), encoding="utf-8")
    names = str(tmp_path / "tags.txt")
    closed = ram.RAMPlus(small("ram_plus").replace(num_tags=3, descriptions_per_tag=2, tag_list=names,
                                                   tag_list_chinese=names, threshold_file=None))
    closed.load_weights({**{p.name: p.asnumpy() for p in model.get_parameters() if p.name != "label_embed"},
                         "label_embed": want.reshape(6, 16)})
    np.testing.assert_allclose(closed(Tensor(pixels)).asnumpy(), logits, atol=1e-5)
    en, cn = model.generate_tag(pixels, threshold=0.0)
    assert en == cn == [" | ".join(TAGS)] * 2
    model.clear_open_set_tags()
    assert len(model.tag_list) == 32 and model.open_set_label_embed is None and model.class_threshold[0] == 1.0


def test_ram_open_set_uses_averaged_templates(clip):
    model = ram.RAM(small("ram").replace(caption_modules=False))
    model.set_open_set_tags(TAGS, clip_model=clip, cache=False, threshold=0.4,
                            tag_names_chinese=["航拍", "苹果", "圣代"])
    feats = clip.get_text_features(mindram.tokenize(openset.template_prompts("apple"))).asnumpy()
    mean = (feats / np.linalg.norm(feats, axis=-1, keepdims=True)).mean(axis=0)
    np.testing.assert_allclose(model.open_set_label_embed.asnumpy()[1], mean / np.linalg.norm(mean), atol=1e-6)
    assert model.tag_list_chinese == ["航拍", "苹果", "圣代"] and model.class_threshold[0] == np.float32(0.4)
    pixels = np.zeros((1, 3, 96, 96), np.float32)
    assert model(Tensor(pixels), model.open_set_label_embed).shape == (1, 3)
    with pytest.raises(DataError, match="descriptions are for RAM"):
        model.set_open_set_tags(TAGS, DESCRIPTIONS, clip_model=clip)


def test_embeddings_are_cached_on_disk_by_weights_and_texts(clip, monkeypatch):
    clip.config = clip.config.replace(checkpoint_name_or_path="tiny_clip")
    first = openset.build_label_embed("ram_plus", TAGS, DESCRIPTIONS, clip_model=clip)
    files = list((mindram_home() / "ram" / "openset").glob("tiny_clip-ram_plus-*.npy"))
    assert len(files) == 1 and not list(files[0].parent.glob(".*tmp*"))
    with monkeypatch.context() as patched:
        patched.setattr(openset, "encode_texts", lambda *a, **k: pytest.fail("cache not used"))
        np.testing.assert_array_equal(openset.build_label_embed("ram_plus", TAGS, DESCRIPTIONS, clip_model=clip),
                                      first)
    other = {**DESCRIPTIONS, "apple": ["a photo of a apple.", "a green fruit"]}
    openset.build_label_embed("ram_plus", TAGS, other, clip_model=clip)
    assert len(list(files[0].parent.glob("tiny_clip-ram_plus-*.npy"))) == 2


def test_open_set_errors(clip):
    model = ram.RAMPlus(fixture_config("ram_plus"))
    with pytest.raises(ConfigError, match="16-d, the model needs 512"):
        model.set_open_set_tags(TAGS, DESCRIPTIONS, clip_model=clip, cache=False)
    with pytest.raises(DataError, match="non-empty"):
        model.set_open_set_tags([], clip_model=clip)
    with pytest.raises(Exception, match="convert"):
        model.set_open_set_tags(["dog"])  # the default clip_vit_b_16 checkpoint is not converted here

"""RAM / RAM++ off the happy path: the open-set cache is keyed by the weights and stays in its folder, no public
call changes a caller's model behind its back, and tagging values are checked where they enter."""
import logging

import numpy as np
import pytest
from mindspore import Tensor

import mindram
import mindram.models.ram as ram
from mindram.errors import ConfigError, DataError
from mindram.models.ram import openset, tags
from mindram.trainer.tasks.tagging_options import TaggingOptions
from mindram.utils.io import mindram_home
from tests.fixtures.ram.loader import fixture_config
from tests.unit.test_clip_model import tiny

TAGS = ["go-kart", "horse racing", "touring car"]
PIXELS = np.random.default_rng(3).standard_normal((2, 3, 96, 96)).astype(np.float32)
IMAGES = list(np.random.default_rng(4).integers(0, 256, (2, 80, 100, 3), dtype=np.uint8))


def tiny_clip(name=None):
    config = tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_16"))
    model = mindram.CLIPModel(config.replace(checkpoint_name_or_path=name) if name else config)
    model.set_train(False)
    return model


@pytest.fixture(scope="module")
def clip():
    return tiny_clip()


def small_ram_plus(**overrides):
    model = ram.RAMPlus(fixture_config("ram_plus", label_embed_dim=16, **overrides))
    model.set_train(False)
    return model


def model_state(model):
    """Everything a tagging call could leave changed: vocabulary, thresholds, embeddings, weights, mode."""
    embed = model.open_set_label_embed
    return {"tag_list": list(model.tag_list), "tag_list_chinese": list(model.tag_list_chinese),
            "class_threshold": np.asarray(model.class_threshold).tolist(),
            "open_set_label_embed": None if embed is None else embed.asnumpy().tolist(),
            "delete_tag_index": list(model.delete_tag_index),
            "weights": {p.name: p.asnumpy().tobytes() for p in model.get_parameters()},
            "training": model.training}


def cache_dir():
    return mindram_home() / "ram" / "openset"


def npy_files(folder):
    return sorted(p for p in folder.rglob("*.npy"))


# ----------------------------------------------------------------------------------------------- open-set cache
def test_cache_is_keyed_by_the_weights_not_the_name():
    first_clip, second_clip = tiny_clip("same_name"), tiny_clip("same_name")
    second_clip.load_weights({p.name: p.asnumpy() for p in first_clip.get_parameters()})
    projection = second_clip.text.text_projection
    noise = np.random.default_rng(0).standard_normal(projection.shape).astype(np.float32)
    projection.set_data(Tensor(projection.asnumpy() + noise))  # new weights, same name
    first = openset.build_label_embed("ram_plus", TAGS, clip_model=first_clip)
    second = openset.build_label_embed("ram_plus", TAGS, clip_model=second_clip)
    np.testing.assert_allclose(second, openset.build_label_embed("ram_plus", TAGS, clip_model=second_clip,
                                                                 cache=False), atol=1e-6)
    assert not np.allclose(first, second)
    assert len(list(cache_dir().glob("same_name-ram_plus-*.npy"))) == 2


def test_cache_stays_in_its_folder_for_absolute_and_parent_paths(tmp_path, monkeypatch):
    model_dir = tiny_clip().save_pretrained(tmp_path / "models" / "clip_abs")
    home = mindram_home()
    existing = set(npy_files(home))  # other caches of the session (e.g. zero-shot classifiers) stay out of it
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    from_absolute = openset.build_label_embed("ram_plus", TAGS, clip_model=str(model_dir.resolve()))
    from_parent = openset.build_label_embed("ram_plus", TAGS, clip_model="../models/clip_abs")
    np.testing.assert_array_equal(from_absolute, from_parent)  # the same weights: one cache entry
    assert npy_files(tmp_path) == []
    outside = [p for p in npy_files(home) if p.parent != cache_dir() and p not in existing]
    assert outside == [] and len(list(cache_dir().glob("clip_abs-ram_plus-*.npy"))) == 1
    for name, label in (("../../x y", "x_y"), ("/abs/clip_vit_b_16", "clip_vit_b_16"), ("..", "clip"),
                        (None, "clip"), (".hidden", "hidden")):
        assert openset.cache_label(name) == label


def test_corrupt_cache_file_is_rebuilt_with_a_warning(caplog):
    model = tiny_clip("corrupt_clip")
    first = openset.build_label_embed("ram", TAGS, clip_model=model)
    (path,) = cache_dir().glob("corrupt_clip-ram-*.npy")
    for damage in (lambda: path.write_bytes(b"\x93NUMPY garbage"), lambda: np.save(path, np.zeros((2, 16)))):
        damage()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            np.testing.assert_array_equal(openset.build_label_embed("ram", TAGS, clip_model=model), first)
        assert "rebuilding" in caplog.text and path.name in caplog.text
        np.testing.assert_array_equal(np.load(path), first)


def test_failed_cache_write_leaves_no_file_and_still_returns(monkeypatch, caplog):
    model = tiny_clip("full_disk_clip")

    def failing_save(file, array, *args, **kwargs):
        with open(file, "wb") as f:
            f.write(b"\x93NUMPY partial")
        raise OSError("No space left on device")

    want = openset.build_label_embed("ram_plus", TAGS, clip_model=model, cache=False)
    monkeypatch.setattr(openset.np, "save", failing_save)
    with caplog.at_level(logging.WARNING):
        np.testing.assert_array_equal(openset.build_label_embed("ram_plus", TAGS, clip_model=model), want)
    assert "not written" in caplog.text
    assert [p.name for p in cache_dir().glob("*full_disk_clip*")] == []


# ----------------------------------------------------------------------------------------------- no hidden mutation
def test_pipeline_open_set_leaves_the_callers_model_unchanged(clip):
    model = small_ram_plus()
    before = model_state(model)
    tagger = mindram.pipeline("image_tagging", model=model, open_set_tags=TAGS, open_set_clip_model=clip,
                              open_set_threshold=0.0)
    assert model_state(model) == before
    result = tagger(IMAGES)
    assert [sorted(r["label"] for r in row) for row in result] == [sorted(TAGS)] * 2
    assert model_state(model) == before
    closed = mindram.pipeline("image_tagging", model=model, threshold=0.0)(IMAGES[0])[0]
    assert {r["label"] for r in closed} <= set(model.tag_list) and len(closed) == len(model.tag_list)


def test_open_set_tags_block_restores_the_vocabulary_even_on_error(clip):
    model = small_ram_plus(delete_tag_index=[5])
    before = model_state(model)
    vocabulary = model.open_set_vocabulary(TAGS, clip_model=clip, cache=False)
    assert model_state(model) == before and vocabulary.names == TAGS
    with pytest.raises(RuntimeError, match="inside"):
        with model.open_set_tags(TAGS, clip_model=clip, cache=False, threshold=0.0):
            assert model.tag_list == TAGS and model.delete_tag_index == []
            # the closed set's delete_tag_index [5] does not apply to the 3 open-set tags
            assert model.generate_tag(PIXELS)[0] == [" | ".join(TAGS)] * 2
            raise RuntimeError("inside")
    assert model_state(model) == before
    model.set_open_set_tags(TAGS, clip_model=clip, cache=False)
    model.clear_open_set_tags()
    assert model_state(model) == before


# ----------------------------------------------------------------------------------------------- values
@pytest.mark.parametrize("bad", [float("nan"), 1.5, -0.1, "0.5", True])
def test_thresholds_outside_0_1_are_refused_everywhere(bad, clip):
    model = small_ram_plus()
    scores = np.full((1, len(model.tag_list)), 0.5, np.float32)
    with pytest.raises(ConfigError, match="threshold"):
        model.select_tags(scores, bad)
    with pytest.raises(ConfigError, match="threshold"):
        model.generate_tag(PIXELS, threshold=bad)
    with pytest.raises(ConfigError, match="threshold"):
        model.set_open_set_tags(TAGS, threshold=bad, clip_model=clip, cache=False)
    with pytest.raises(ConfigError, match="threshold"):
        mindram.pipeline("image_tagging", model=model, threshold=bad)
    with pytest.raises(ConfigError, match="open-set threshold"):
        mindram.pipeline("image_tagging", model=model, open_set_tags=TAGS, open_set_threshold=bad,
                         open_set_clip_model=clip)
    tagger = mindram.pipeline("image_tagging", model=model)
    with pytest.raises(ConfigError, match="threshold"):
        tagger(IMAGES[0], threshold=bad)
    if not isinstance(bad, (str, bool)):
        with pytest.raises(ConfigError, match="threshold"):
            TaggingOptions.from_dict({"threshold": bad})
    assert model_state(model)["tag_list"] == model.tag_list and model.open_set_label_embed is None


def test_per_tag_thresholds_and_threshold_files_are_checked(tmp_path):
    model = small_ram_plus()
    per_tag = np.full(len(model.tag_list), 0.5, np.float32)
    per_tag[3] = np.nan
    with pytest.raises(ConfigError, match="tag 3"):
        model.select_tags(np.zeros((1, len(per_tag)), np.float32), per_tag)
    path = tmp_path / "thresholds.txt"
    path.write_text("0.5\n1.5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"thresholds.txt:2: expected a number in \[0, 1\], got 1.5"):
        tags.read_thresholds(path, 4, 0.68)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_top_k_must_be_a_positive_int(bad):
    model = small_ram_plus()
    with pytest.raises(ConfigError, match="top_k"):
        mindram.pipeline("image_tagging", model=model, top_k=bad)
    with pytest.raises(ConfigError, match="top_k"):
        mindram.pipeline("image_tagging", model=model)(IMAGES[0], top_k=bad)


def test_open_set_tag_names_are_checked(clip):
    model = small_ram_plus()
    assert model.open_set_vocabulary("cat", clip_model=clip, cache=False).names == ["cat"]
    assert model.open_set_vocabulary(" go-kart, horse racing ", clip_model=clip, cache=False).names == \
        ["go-kart", "horse racing"]
    tagger = mindram.pipeline("image_tagging", model=model, open_set_tags="go-kart,touring car",
                              open_set_clip_model=clip, open_set_threshold=0.0)
    assert sorted(r["label"] for r in tagger(IMAGES[0])[0]) == ["go-kart", "touring car"]
    with pytest.raises(DataError, match=r"duplicate tag name\(s\) \['cat'\]"):
        model.set_open_set_tags(["cat", "dog", "cat"], clip_model=clip, cache=False)
    for empty in (["cat", " "], "cat,,dog", ["cat", ""], [], ""):
        with pytest.raises(DataError, match="non-empty"):
            model.set_open_set_tags(empty, clip_model=clip, cache=False)
    with pytest.raises(DataError, match="descriptions: 1 lists for 3 tags"):
        model.set_open_set_tags(TAGS, descriptions=[["a kart"]], clip_model=clip, cache=False)
    with pytest.raises(DataError, match="descriptions: expected"):
        openset.description_texts(["a", "b", "c"], "xyz")  # not three one-letter descriptions
    with pytest.raises(ConfigError, match="open_set_descriptions given without open_set_tags"):
        mindram.pipeline("image_tagging", model=model, open_set_descriptions={"cat": ["a cat"]})
    assert model.open_set_label_embed is None and len(model.tag_list) == model.config.num_tags

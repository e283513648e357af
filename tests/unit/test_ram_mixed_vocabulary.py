"""Built-in tags plus user tags in one vocabulary (mindram.models.ram.mixed_vocabulary): the built-in scores
are unchanged, the user tags score as they do open-set, one forward pass, the model untouched."""
import logging

import numpy as np
import pytest

import mindram
import mindram.models.ram as ram
from mindram.errors import ConfigError
from mindram.models.ram.mixed_vocabulary import mixed_vocabulary
from tests.fixtures.ram.loader import fixture_config
from tests.unit.test_clip_model import tiny

USER = ["go-kart", "horse racing"]


@pytest.fixture(scope="module")
def clip():
    model = mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_16")))
    model.set_train(False)
    return model


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(3).standard_normal((2, 3, 96, 96)).astype(np.float32)


@pytest.mark.parametrize("model_type", ["ram_plus", "ram"])
def test_builtin_scores_unchanged_and_user_tags_score_as_open_set(model_type, clip, pixels):
    np.random.seed(0)
    model = (ram.RAMPlus if model_type == "ram_plus" else ram.RAM)(fixture_config(model_type, label_embed_dim=16))
    model.set_train(False)
    before = model.vocabulary()
    closed = model.get_tag_scores(pixels)
    # RAM++: 1 description per user tag (the default), repeated to the model's 5 — exact
    vocabulary = mixed_vocabulary(model, USER, clip_model=clip, cache=False, threshold=0.4)
    mixed = model.get_tag_scores(pixels, vocabulary.label_embed)
    alone = model.get_tag_scores(pixels, model.open_set_vocabulary(USER, clip_model=clip, cache=False).label_embed)
    num = len(before.names)
    assert mixed.shape == (2, num + 2)
    np.testing.assert_allclose(mixed[:, :num], closed, atol=1e-6)
    np.testing.assert_allclose(mixed[:, num:], alone, atol=1e-6)
    assert vocabulary.names == before.names + USER and vocabulary.names_chinese[-2:] == USER
    np.testing.assert_array_equal(vocabulary.thresholds[:num], before.thresholds)
    assert vocabulary.thresholds[num:].tolist() == pytest.approx([0.4, 0.4])
    assert vocabulary.delete_tag_index == before.delete_tag_index
    # the model is not changed until the vocabulary is installed; installed, generate_tag sees all tags
    assert model.vocabulary().names == before.names
    model.use_vocabulary(vocabulary)
    english, _ = model.generate_tag(pixels, threshold=0.0)
    assert all(tag in english[0].split(" | ") for tag in USER)


def test_descriptions_that_do_not_divide_the_models_count_warn(clip, pixels, caplog):
    model = ram.RAMPlus(fixture_config("ram_plus", label_embed_dim=16))
    descriptions = {t: [f"a photo of a {t}.", f"{t}, seen up close"] for t in USER}  # 2 does not divide 5
    with caplog.at_level(logging.WARNING):
        vocabulary = mixed_vocabulary(model, USER, descriptions, clip_model=clip, cache=False)
    assert "do not divide" in caplog.text and "go-kart" in caplog.text
    assert vocabulary.label_embed.shape == (len(model.vocabulary().names) + 2, 5, 16)
    exact = {t: d[:1] for t, d in descriptions.items()}  # 1 divides 5
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        mixed_vocabulary(model, USER, exact, clip_model=clip, cache=False)
    assert "do not divide" not in caplog.text


def test_user_tags_already_in_the_vocabulary_are_refused(clip):
    model = ram.RAMPlus(fixture_config("ram_plus", label_embed_dim=16))
    existing = model.vocabulary().names[0]
    with pytest.raises(ConfigError, match="already in the model's vocabulary"):
        mixed_vocabulary(model, [existing, "go-kart"], clip_model=clip, cache=False)


def test_pipeline_extends_the_vocabulary_on_request(clip, pixels):
    np.random.seed(0)
    model = ram.RAMPlus(fixture_config("ram_plus", label_embed_dim=16))
    model.set_train(False)
    builtin = model.vocabulary().names
    tagger = mindram.pipeline("image_tagging", model=model, open_set_tags="go-kart, horse racing",
                              open_set_clip_model=clip, extend_vocabulary=True)
    assert tagger.vocabulary().names == builtin + USER
    (tags,) = tagger(np.transpose((pixels[0] - pixels[0].min()) / np.ptp(pixels[0]), (1, 2, 0)), threshold=0.0)
    assert {t["label"] for t in tags} == set(builtin + USER)
    assert model.vocabulary().names == builtin  # the caller's model is unchanged
    with pytest.raises(ConfigError, match="extend_vocabulary"):
        mindram.pipeline("image_tagging", model=model, extend_vocabulary=True)

"""Inputs are validated where they enter: zero-shot options, model paths, and a model object left untouched."""
import numpy as np
import pytest

import mindram
from mindram import catalog
from mindram.errors import ConfigError, DataError
from mindram.models.clip.zero_shot import build_zero_shot_classifier, check_templates
from mindram.pipeline import pipeline
from mindram.utils.validation import check_batch_size, check_top_k
from mindram.trainer.tasks.clip_eval import resolve_templates
from tests.unit.test_clip_model import tiny

ZERO_SHOT = "zero_shot_image_classification"
LABELS = ["dog", "cat"]
IMAGE = np.random.default_rng(0).integers(0, 256, size=(20, 24, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def model():
    return mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32")))


@pytest.fixture(scope="module")
def clf(model):
    return pipeline(ZERO_SHOT, model=model, candidate_labels=LABELS)


# --- top_k --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("top_k", [0, -1, 1.5, "3", True])
def test_bad_top_k_is_a_config_error_naming_the_value(model, clf, top_k):
    with pytest.raises(ConfigError, match=f"top_k: expected None or a positive int, got {top_k!r}"):
        clf(IMAGE, top_k=top_k)
    with pytest.raises(ConfigError, match="top_k"):
        pipeline(ZERO_SHOT, model=model, candidate_labels=LABELS, top_k=top_k)


def test_good_top_k_and_batch_size(clf):
    assert check_top_k(None) is None and check_top_k(np.int64(2)) == 2 and type(check_top_k(np.int64(2))) is int
    assert len(clf(IMAGE, top_k=1)[0]) == 1 and len(clf(IMAGE, top_k=5)[0]) == 2
    with pytest.raises(ConfigError, match="batch_size: expected a positive int, got 0"):
        check_batch_size(0)


# --- candidate labels ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("labels, message", [
    ("cat, dog,", r"label 2 of \['cat', 'dog', ''\] is blank"),
    ("cat,, dog", r"label 1 of \['cat', '', 'dog'\] is blank"),
    (["cat", "  "], "label 1 .* is blank"),
    ("", "label 0 .* is blank"),
    ([], "non-empty list of strings, got \\[\\]"),
    (["cat", 3], "non-empty list of strings"),
    (["cat", "dog", "cat"], r"\['cat'\] given more than once"),
    ("cat, dog, cat", r"\['cat'\] given more than once"),
])
def test_bad_candidate_labels_are_refused(clf, labels, message):
    with pytest.raises(ConfigError, match=message):
        clf(IMAGE, candidate_labels=labels)


def test_comma_separated_labels_are_stripped(clf):
    assert {d["label"] for d in clf(IMAGE, candidate_labels=" cat ,dog")[0]} == {"cat", "dog"}


# --- templates: one rule for the pipeline, build_zero_shot_classifier and the trainer config --------------

BAD_TEMPLATES = [("a photo", "found none"), ("{} and {}", r"found \{\}, \{\}"), ("a {name}", r"found \{name\}"),
                 ("a {0}", r"found \{0\}"), ("a {:>9}", r"found \{:>9\}"), ("a {", "not a valid format string")]


@pytest.mark.parametrize("template, message", BAD_TEMPLATES)
def test_bad_templates_are_refused_everywhere(model, clf, template, message):
    with pytest.raises(ConfigError, match=f"hypothesis_template: template '.*' .*{message}"):
        clf(IMAGE, hypothesis_template=template)
    with pytest.raises(ConfigError, match=f"hypothesis_template: template '.*' .*{message}"):
        clf(IMAGE, hypothesis_template=["a photo of a {}.", template])
    with pytest.raises(ConfigError, match=f"^templates: template '.*' .*{message}"):
        build_zero_shot_classifier(model, LABELS, [template])
    with pytest.raises(ConfigError, match=f"^zero_shot.templates: template '.*' .*{message}"):
        resolve_templates([template])
    with pytest.raises(ConfigError, match=f"^zero_shot.templates: template '.*' .*{message}"):
        resolve_templates(template)


def test_good_templates(clf):
    assert check_templates(["a {}", "{{literal}} {}", str.upper]) == ["a {}", "{{literal}} {}", str.upper]
    assert resolve_templates("a {} photo") == ["a {} photo"] and len(resolve_templates("imagenet")) == 80
    with pytest.raises(ConfigError, match="is a method_descriptor; expected a format string"):
        resolve_templates([str.upper])  # a YAML config cannot name a callable
    with pytest.raises(ConfigError, match="non-empty list"):
        check_templates([])
    out = clf(IMAGE, hypothesis_template=["{{a}} {}", lambda c: f"a {c}"])[0]
    assert {d["label"] for d in out} == set(LABELS)


# --- a model argument that looks like a path says the path is missing ------------------------------------

MISSING_PATHS = ["/nonexistent_dir", "./x", "no_such_dir/model", "~/mindram_no_such_dir_x", "x.ckpt",
                 "x.safetensors", "x.yaml"]


@pytest.mark.parametrize("path", MISSING_PATHS)
def test_missing_model_path_says_so(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f"^model path does not exist: {path};"):
        pipeline(ZERO_SHOT, model=path, candidate_labels=LABELS)
    with pytest.raises(ConfigError, match=f"^model path does not exist: {path};"):
        catalog.resolve("clip", path)


@pytest.mark.parametrize("path", ["/nonexistent_dir", "./x", "~/mindram_no_such_dir_x", "x.yaml"])
def test_from_pretrained_of_a_missing_path_says_so(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="model path does not exist"):
        mindram.CLIPModel.from_pretrained(path)
    with pytest.raises(ConfigError, match="model path does not exist|x.yaml: no such config file"):
        mindram.CLIPConfig.from_pretrained(path)


def test_names_are_not_paths_and_unknown_names_list_the_closest():
    assert not any(catalog.looks_like_path(name) for name in catalog.support_list("clip"))
    assert catalog.looks_like_path("runs/clip") and catalog.looks_like_path("~x") and catalog.looks_like_path("m.yml")
    with pytest.raises(KeyError, match="unknown clip model 'clip_vit_b32'; closest: .*clip_vit_b_32"):
        mindram.CLIPModel.from_pretrained("clip_vit_b32")


# --- a model object given to a pipeline is used as it is ----------------------------------------------------

def test_pipelines_leave_a_model_object_unchanged(model):
    model.set_train(True)
    try:
        attributes = dict(vars(model))
        params = {p.name: p.asnumpy().copy() for p in model.get_parameters()}
        clf = pipeline(ZERO_SHOT, model=model, candidate_labels=LABELS)
        fe = pipeline("feature_extraction", model=model)
        clf([IMAGE, IMAGE])
        fe(images=[IMAGE], texts=["a dog"])
        assert clf.model is model and fe.model is model
        assert model.training is True
        assert vars(model).keys() == attributes.keys()
        assert all(vars(model)[k] is v for k, v in attributes.items())
        for p in model.get_parameters():
            np.testing.assert_array_equal(p.asnumpy(), params[p.name])
    finally:
        model.set_train(False)


def test_feature_extraction_refuses_empty_lists(model):
    fe = pipeline("feature_extraction", model=model)
    with pytest.raises(DataError, match="empty text list"):
        fe(texts=[])
    with pytest.raises(DataError, match="empty image list"):
        fe(images=[])

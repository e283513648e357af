"""pipeline(): zero-shot classification and feature extraction on a tiny CLIP."""
import logging

import numpy as np
import pytest
from PIL import Image

import mindram
from mindram.errors import DataError
from mindram.models.clip.zero_shot import (build_zero_shot_classifier, bucket_size, encode_in_batches,
                                           imagenet_classnames_and_templates, l2_normalize, zero_shot_logits)
from mindram.pipeline import pipeline, supported_tasks
from mindram.pipeline.base import build_image_processor
from tests.unit.test_clip_model import tiny

LABELS = ["dog", "cat", "car", "tree"]


@pytest.fixture(scope="module")
def model():
    return mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32")))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    rng = np.random.default_rng(0)
    arrays = [(rng.random((24 + 4 * i, 40, 3)) * 255).astype(np.uint8) for i in range(5)]
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, arr in enumerate(arrays):
        paths.append(folder / f"img{i}.png")
        Image.fromarray(arr).save(paths[-1])
    (folder / "broken.jpg").write_bytes(b"not an image")
    return arrays, paths, folder / "broken.jpg"


def expected_scores(model, image, labels, templates):
    feats = model.get_image_features(mindram.CLIPImageProcessor(image_size=model.image_size)(image))
    logits = zero_shot_logits(feats, build_zero_shot_classifier(model, labels, templates))[0].astype(np.float64)
    probs = np.exp(logits - logits.max())
    return dict(zip(labels, probs / probs.sum()))


def count_calls(monkeypatch, model, name):
    calls = []
    original = getattr(model, name)

    def wrapper(x):
        calls.append(len(x))
        return original(x)
    monkeypatch.setattr(model, name, wrapper)
    return calls


def test_zero_shot_classifier_definition(model):
    templates = ["a photo of a {}.", lambda c: f"{c}!", "itap of the {}"]
    weights = build_zero_shot_classifier(model, LABELS, templates, batch_size=4)
    assert weights.shape == (16, len(LABELS)) and weights.dtype == np.float32
    for c, label in enumerate(LABELS):
        ids = mindram.tokenize([f"a photo of a {label}.", f"{label}!", f"itap of the {label}"])
        mean = l2_normalize(model.get_text_features(ids).asnumpy()).mean(axis=0)
        np.testing.assert_allclose(weights[:, c], mean / np.linalg.norm(mean), atol=1e-5)
    np.testing.assert_allclose(build_zero_shot_classifier(model, LABELS, templates, batch_size=64), weights, atol=1e-5)
    feats = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    np.testing.assert_allclose(zero_shot_logits(feats * 7, weights), 100 * l2_normalize(feats) @ weights, rtol=1e-5)
    classnames, imagenet_templates = imagenet_classnames_and_templates()
    assert len(classnames) == 1000 and len(imagenet_templates) == 80 and classnames[0] == "tench"
    assert len(imagenet_classnames_and_templates(simple=True)[1]) == 7


def test_encode_in_batches_pads_to_few_shapes():
    shapes = []

    def encode(x):
        shapes.append(len(x))
        return x[:, :2] * 2
    data = np.arange(26, dtype=np.float32).reshape(13, 2)
    np.testing.assert_array_equal(encode_in_batches(encode, data, 8), data * 2)
    assert shapes == [8, 8]  # 8 + 5 padded to 8
    assert [bucket_size(n, 8) for n in range(1, 10)] == [1, 2, 4, 4, 8, 8, 8, 8, 8]
    assert bucket_size(5, 6) == 6


def test_tasks_and_unknown_task():
    assert {"zero_shot_image_classification", "feature_extraction"} <= set(supported_tasks())
    with pytest.raises(KeyError, match="supported tasks.*zero_shot_image_classification"):
        pipeline("zero_shot_image_clasification")


def test_zero_shot_output_format_sorted_and_correct(model, images):
    arrays, _, _ = images
    clf = pipeline("zero_shot_image_classification", model=model, candidate_labels=LABELS)
    out = clf(arrays[0])
    assert isinstance(out, list) and len(out) == 1 and len(out[0]) == len(LABELS)
    assert all(set(d) == {"score", "label"} and isinstance(d["score"], float) for d in out[0])
    scores = [d["score"] for d in out[0]]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0)
    want = expected_scores(model, arrays[0], LABELS, ["a picture of {}"])
    for d in out[0]:
        assert d["score"] == pytest.approx(want[d["label"]], abs=1e-5)


def test_zero_shot_list_inputs_of_every_kind_and_batching(model, images):
    arrays, paths, _ = images
    clf = pipeline("zero_shot_image_classification", model=model, candidate_labels=LABELS, batch_size=2)
    inputs = [arrays[0], str(paths[1]), paths[2], Image.open(paths[3]), arrays[4]]
    out = clf(inputs)
    assert len(out) == 5
    for item, result in zip(inputs, out):
        single = clf(item)[0]
        assert [d["label"] for d in result] == [d["label"] for d in single]
        np.testing.assert_allclose([d["score"] for d in result], [d["score"] for d in single], atol=1e-5)
    assert clf([]) == []


def test_bad_item_in_list_is_none_and_logged(model, images, caplog):
    arrays, paths, broken = images
    clf = pipeline("zero_shot_image_classification", model=model, candidate_labels=LABELS)
    with caplog.at_level(logging.WARNING, logger="mindram"):
        out = clf([arrays[0], broken, paths[0], "missing.png"])
    assert out[1] is None and out[3] is None and out[0] is not None and out[2] is not None
    assert "input 1" in caplog.text and str(broken) in caplog.text
    assert "input 3" in caplog.text and "missing.png" in caplog.text
    with pytest.raises(DataError):
        clf(broken)
    with pytest.raises(FileNotFoundError):
        clf("missing.png")


def test_classifier_built_once_per_label_set(model, images, monkeypatch):
    arrays, _, _ = images
    clf = pipeline("zero_shot_image_classification", model=model, candidate_labels=LABELS, batch_size=2)
    text_calls = count_calls(monkeypatch, model, "get_text_features")
    image_calls = count_calls(monkeypatch, model, "get_image_features")
    clf(arrays)
    clf(arrays[:3])
    clf(arrays[0])
    assert len(text_calls) == 1 and len(image_calls) == 3 + 2 + 1
    clf(arrays[0], candidate_labels=["x", "y"])
    clf(arrays[0], candidate_labels=["x", "y"])
    clf(arrays[0])
    assert len(text_calls) == 2


def test_per_call_options(model, images):
    arrays, _, _ = images
    clf = pipeline("zero_shot_image_classification", model=model, candidate_labels=LABELS)
    out = clf(arrays[0], candidate_labels=["a red thing", "a blue thing"], top_k=1)
    assert len(out[0]) == 1 and out[0][0]["label"] in {"a red thing", "a blue thing"}
    assert {d["label"] for d in clf(arrays[0])[0]} == set(LABELS)  # defaults are back
    templates = ["a photo of a {}.", lambda c: f"a drawing of the {c}"]
    out = clf(arrays[1], hypothesis_template=templates)
    want = expected_scores(model, arrays[1], LABELS, templates)
    for d in out[0]:
        assert d["score"] == pytest.approx(want[d["label"]], abs=1e-5)


def test_option_errors(model, images):
    arrays, _, _ = images
    with pytest.raises(ValueError, match="candidate_labels"):
        pipeline("zero_shot_image_classification", model=model)(arrays[0])
    clf = pipeline("zero_shot_image_classification", model=model, candidate_labels=LABELS)
    with pytest.raises(TypeError, match="unknown option"):
        clf(arrays[0], labels=["x"])
    with pytest.raises(ValueError, match="placeholder"):
        clf(arrays[0], hypothesis_template="a photo")
    with pytest.raises(ValueError, match="top_k"):
        clf(arrays[0], top_k=0)


def test_catalog_preprocessing_follows_the_weights(model):
    assert build_image_processor(model).mean == pytest.approx(mindram.CLIPImageProcessor().mean)
    laion = mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_l_14.laion2b_s32b_b82k")))
    processor = build_image_processor(laion)
    assert processor.mean == (0.5, 0.5, 0.5) and processor.std == (0.5, 0.5, 0.5)
    assert processor.image_size == laion.image_size == 32
    with pytest.raises(ValueError, match="image size"):
        build_image_processor(model, mindram.CLIPImageProcessor(image_size=64))


def test_processor_from_pretrained_and_model_image_processor(tmp_path):
    dfn = mindram.CLIPImageProcessor.from_pretrained("clip_vit_h_14.dfn5b")
    assert dfn.resize_mode == "squash" and dfn.image_size == 224 and dfn.mean == mindram.CLIPImageProcessor().mean
    assert mindram.CLIPImageProcessor.from_pretrained("clip_vit_l_14@336").image_size == 336
    laion = mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_l_14.laion2b_s32b_b82k")))
    assert laion.image_processor.mean == (0.5, 0.5, 0.5) and laion.image_processor.image_size == 32
    laion.save_pretrained(tmp_path / "laion")  # the directory keeps the weights' name, so their preprocessing
    saved = mindram.CLIPImageProcessor.from_pretrained(tmp_path / "laion")
    assert saved.to_dict() == laion.image_processor.to_dict()
    assert mindram.RAMImageProcessor.from_pretrained("ram_plus_swin_l_384").image_size == 384
    assert isinstance(laion.tokenizer, mindram.CLIPTokenizer)


def test_model_from_directory(model, images, tmp_path):
    model.save_pretrained(tmp_path / "tiny")
    clf = pipeline("zero_shot_image_classification", model=str(tmp_path / "tiny"), candidate_labels=LABELS)
    ref = pipeline("zero_shot_image_classification", model=model, candidate_labels=LABELS)
    arrays, _, _ = images
    np.testing.assert_allclose([d["score"] for d in clf(arrays[0])[0]], [d["score"] for d in ref(arrays[0])[0]],
                               atol=1e-6)


def test_feature_extraction(model, images):
    arrays, paths, broken = images
    fe = pipeline("feature_extraction", model=model, batch_size=2)
    image_emb = fe(images=arrays)
    assert image_emb.shape == (5, 16) and image_emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(image_emb, axis=1), 1.0, atol=1e-5)
    raw = fe(arrays[:3], normalize=False)
    pixels = mindram.CLIPImageProcessor(image_size=32)(arrays[:3])
    np.testing.assert_allclose(raw, model.get_image_features(pixels).asnumpy(), atol=1e-5)
    np.testing.assert_allclose(image_emb[:3], l2_normalize(raw), atol=1e-5)
    text_emb = fe(texts=["a dog", "a cat", "two cars"])
    assert text_emb.shape == (3, 16)
    np.testing.assert_allclose(text_emb, l2_normalize(model.get_text_features(
        mindram.tokenize(["a dog", "a cat", "two cars"])).asnumpy()), atol=1e-5)
    assert fe(texts="a dog").shape == (1, 16) and fe(paths[0]).shape == (1, 16)
    both = fe(images=paths[:2], texts=["x"])
    assert isinstance(both, tuple) and both[0].shape == (2, 16) and both[1].shape == (1, 16)
    with pytest.raises(DataError, match="input 2"):
        fe(images=[paths[0], paths[1], broken])
    with pytest.raises(TypeError):
        fe()

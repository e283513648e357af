"""Zero-shot classification parity with open_clip 3.3.0's own zero-shot code on identical random weights.

Reference: ``open_clip.build_zero_shot_classifier`` + open_clip's eval preprocessing + ``100 · n(image) @ W``
on a seeded ViT-B-32 (``clip_reference.reference_model``) and real photographs (``skimage.data``); ours:
the converted weights in ``CLIPModel``, ``CLIPImageProcessor``, ``build_zero_shot_classifier`` and the
``zero_shot_image_classification`` pipeline.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
skdata = pytest.importorskip("skimage.data")
from PIL import Image  # noqa: E402

import mindram  # noqa: E402
from mindram.models.clip.convert import convert_state_dict  # noqa: E402
from mindram.models.clip.zero_shot import (build_zero_shot_classifier, imagenet_classnames_and_templates,  # noqa: E402
                                           zero_shot_logits)
from mindram.pipeline import pipeline  # noqa: E402
from tests.parity.clip_reference import reference_model  # noqa: E402

CLASSES = ["astronaut", "cup of coffee", "cat", "camera man", "rocket", "coins", "galaxy", "horse", "dog",
           "tissue sample"]
TEMPLATES = ["a photo of a {}.", "a blurry photo of the {}.", "itap of my {}"]
PHOTOS = ["astronaut", "coffee", "chelsea", "camera", "rocket", "coins", "hubble_deep_field", "immunohistochemistry"]
LOGIT_TOL = 1e-3


@pytest.fixture(scope="module")
def models():
    ref = reference_model("ViT-B-32")
    model = mindram.CLIPModel(mindram.CLIPConfig.from_pretrained("clip_vit_b_32.laion2b_s34b_b79k"))
    model.load_weights(convert_state_dict({k: v.numpy() for k, v in ref.state_dict().items()}))
    model.set_train(False)
    return ref, model


@pytest.fixture(scope="module")
def photos():
    return [Image.fromarray(getattr(skdata, name)()) for name in PHOTOS]


@pytest.fixture(scope="module")
def reference(models, photos):
    return reference_logits(models[0], photos, CLASSES, TEMPLATES)


def reference_logits(ref, images, classnames, templates):
    preprocess = open_clip.image_transform(224, is_train=False)  # OpenAI mean/std, bicubic, shortest side
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    with torch.no_grad():
        weights = open_clip.build_zero_shot_classifier(ref, tokenizer, classnames, templates, num_classes_per_batch=4)
        feats = ref.encode_image(torch.stack([preprocess(im) for im in images]), normalize=True)
        return weights.numpy(), (100.0 * feats @ weights).numpy()


def check(logits, ref_logits):
    assert logits.shape == ref_logits.shape
    diff = np.abs(logits - ref_logits).max()
    assert diff <= LOGIT_TOL, diff
    np.testing.assert_array_equal(logits.argmax(1), ref_logits.argmax(1))


def test_classifier_and_logits_match_open_clip(models, photos, reference):
    model = models[1]
    ref_weights, ref_logits = reference
    weights = build_zero_shot_classifier(model, CLASSES, TEMPLATES, batch_size=8)
    assert weights.shape == ref_weights.shape == (512, len(CLASSES))
    assert np.abs(weights - ref_weights).max() <= 1e-5
    pixels = mindram.CLIPImageProcessor(image_size=224)(photos)
    check(zero_shot_logits(model.get_image_features(pixels), weights), ref_logits)


def test_pipeline_matches_open_clip(models, photos, reference):
    model = models[1]
    _, ref_logits = reference
    clf = pipeline("zero_shot_image_classification", model=model, candidate_labels=CLASSES,
                   hypothesis_template=TEMPLATES, batch_size=4)
    out = clf(photos)
    ref_probs = torch.softmax(torch.from_numpy(ref_logits).double(), dim=1).numpy()
    for row, result in enumerate(out):
        assert result[0]["label"] == CLASSES[int(ref_logits[row].argmax())]
        got = np.array([next(d["score"] for d in result if d["label"] == c) for c in CLASSES])
        assert np.abs(got - ref_probs[row]).max() <= 1e-4


def test_imagenet_metadata_and_callable_templates_match_open_clip(models, photos):
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES
    classnames, templates = imagenet_classnames_and_templates()
    assert classnames == list(IMAGENET_CLASSNAMES) and len(templates) == 80
    assert [t.format("x") for t in templates] == [t("x") for t in OPENAI_IMAGENET_TEMPLATES]
    ref, model = models
    picks = classnames[280:290]  # cats, foxes... ; open_clip's callables vs our format strings
    _, ref_logits = reference_logits(ref, photos[:3], picks, OPENAI_IMAGENET_TEMPLATES[:4])
    weights = build_zero_shot_classifier(model, picks, [lambda c, t=t: t.format(c) for t in templates[:4]])
    pixels = mindram.CLIPImageProcessor(image_size=224)(photos[:3])
    check(zero_shot_logits(model.get_image_features(pixels), weights), ref_logits)

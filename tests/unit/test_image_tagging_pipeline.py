"""pipeline("image_tagging") on the tiny reference-shaped RAM++/RAM: format, sorting, thresholds, bad items,
open set, agreement with generate_tag."""
import numpy as np
import pytest
from PIL import Image

import mindram
from mindram.errors import ConfigError, DataError
from mindram.models.ram.convert import convert_state_dict
from tests.fixtures.ram.loader import fixture_config, reference_state_dict
from tests.unit.test_clip_model import tiny


@pytest.fixture(scope="module", params=["ram_plus", "ram"])
def tagger_model(request):
    config = fixture_config(request.param)
    model = (mindram.RAMPlus if request.param == "ram_plus" else mindram.RAM)(config)
    model.load_weights(convert_state_dict(reference_state_dict(request.param), config)[0])
    model.set_train(False)
    return model


def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (80 + 10 * i, 120, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_output_format_and_agreement_with_generate_tag(tagger_model, tmp_path):
    tagger = mindram.pipeline("image_tagging", model=tagger_model, threshold=0.3)
    paths = images(tmp_path)
    results = tagger(paths)
    assert len(results) == 3
    english, chinese = tagger_model.generate_tag(tagger_model.image_processor(paths), threshold=0.3)
    for result, en, cn in zip(results, english, chinese):
        assert all(set(r) == {"label", "label_cn", "score", "class_id"} for r in result)
        scores = [r["score"] for r in result]
        assert scores == sorted(scores, reverse=True) and all(s > 0.3 for s in scores)
        by_index = sorted(result, key=lambda r: r["class_id"])
        assert " | ".join(r["label"] for r in by_index) == en
        assert " | ".join(r["label_cn"] for r in by_index) == cn
    assert any(results), "the fixture model must tag something at 0.3"
    single = tagger(paths[0], top_k=1)
    assert len(single) == 1 and len(single[0]) <= 1


def test_bad_item_in_a_list_is_reported_not_fatal(tagger_model, tmp_path, caplog):
    tagger = mindram.pipeline("image_tagging", model=tagger_model)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    results = tagger([images(tmp_path)[0], str(bad)])
    assert results[1] is None and isinstance(results[0], list)
    assert "broken.jpg" in caplog.text
    with pytest.raises(DataError, match="broken.jpg"):
        tagger(str(bad))


def test_open_set_through_the_pipeline(tmp_path):
    config = fixture_config("ram_plus", label_embed_dim=16)
    model = mindram.RAMPlus(config)
    clip = mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_16")))
    tags = ["go-kart", "horse racing", "touring car"]
    tagger = mindram.pipeline("image_tagging", model=model, open_set_tags=tags, open_set_clip_model=clip,
                              open_set_threshold=0.0)
    result = tagger(images(tmp_path)[0])[0]
    assert sorted(r["label"] for r in result) == sorted(tags)   # threshold 0: every score > 0 passes
    assert {r["class_id"] for r in result} == {0, 1, 2}


def test_unknown_option_is_rejected(tagger_model):
    with pytest.raises(TypeError, match="unknown option"):
        mindram.pipeline("image_tagging", model=tagger_model, candidate_labels=["x"])


def test_image_size_option_runs_the_tagger_at_another_resolution(tagger_model, tmp_path):
    """docs/ram.md#input-resolution: the model's preprocessing at 128 px (the fixture Swin is built for 96)."""
    path = images(tmp_path)[0]
    tagger = mindram.pipeline("image_tagging", model=tagger_model, image_size=128, threshold=0.0)
    assert tagger.image_processor.image_size == 128
    expected = tagger_model.get_tag_scores(tagger.image_processor([path]))[0]
    result = sorted(tagger(path)[0], key=lambda r: r["class_id"])
    assert [r["class_id"] for r in result] == np.flatnonzero(expected > 0).tolist()
    np.testing.assert_allclose([r["score"] for r in result], expected[expected > 0], atol=1e-6)
    with pytest.raises(ConfigError, match="image_size=130"):
        mindram.pipeline("image_tagging", model=tagger_model, image_size=130)
    with pytest.raises(ValueError, match="multiples of patch_size=4"):
        mindram.pipeline("image_tagging", model=tagger_model,
                         image_processor=mindram.RAMImageProcessor(image_size=130))

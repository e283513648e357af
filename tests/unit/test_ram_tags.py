"""Tag selection semantics of RAM / RAM++ (docs/ram.md#tag-selection): per-tag thresholds from the
file, strict '>', threshold-1.0 tags, user overrides, delete_tag_index, Chinese trailing spaces,
empty results, and the shipped data files."""
import numpy as np
import pytest

import mindram.models.ram as ram
from mindram.errors import ConfigError, DataError
from mindram.models.modeling_utils import load_state_dict
from mindram.models.ram import tags
from mindram.models.ram.configuration import DATA_DIR
from mindram.models.ram.convert import convert_state_dict
from tests.fixtures.ram.loader import HERE, expected, fixture_config, inputs, reference_state_dict


@pytest.fixture(scope="module")
def ram_plus():
    """The fixture RAM++ (reference weights), and its reference scores."""
    config = fixture_config("ram_plus")
    model = ram.RAMPlus(config)
    load_state_dict(model, convert_state_dict(reference_state_dict("ram_plus"), config)[0])
    logits = expected("ram_plus")[0]["logits"]
    return model, (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)


def test_shipped_data_files_are_the_reference_ones():
    en = tags.read_tag_list(DATA_DIR / "ram_tag_list.txt")
    cn = tags.read_tag_list(DATA_DIR / "ram_tag_list_chinese.txt")
    thresholds = tags.read_thresholds(DATA_DIR / "ram_tag_list_threshold.txt", 4585, 0.68)
    assert len(en) == len(cn) == 4585 and len(set(en)) == 4585
    assert sum(c.endswith(" ") for c in cn) == 2579
    ones = [en[i] for i in np.flatnonzero(thresholds == 1.0)]
    assert ones == ["body", "cocktail table", "French", "group", "lie", "show", "see", "set", "stop", "use"]
    assert np.count_nonzero(thresholds == np.float32(0.65)) == 3414
    assert {"LICENSE", "NOTICE.txt"} <= {p.name for p in DATA_DIR.iterdir()}


def test_threshold_file_overrides_the_default_entry_by_entry(tmp_path):
    short = tmp_path / "t.txt"
    short.write_text("0.5\n0.9", encoding="utf-8")
    np.testing.assert_array_equal(tags.read_thresholds(short, 4, 0.68), np.float32([0.5, 0.9, 0.68, 0.68]))
    np.testing.assert_array_equal(tags.read_thresholds(None, 2, 0.7), np.float32([0.7, 0.7]))
    with pytest.raises(ConfigError, match="3 thresholds for 2 tags"):
        tags.read_thresholds(_write(tmp_path, "1\n1\n1"), 2, 0.68)
    with pytest.raises(ConfigError, match=":2: expected a number"):
        tags.read_thresholds(_write(tmp_path, "0.5\nhigh"), 2, 0.68)


def _write(folder, text):
    path = folder / "thresholds.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_strict_greater_and_threshold_one_never_fires():
    thresholds = np.float32([0.5, 1.0, 0.65])
    scores = np.float32([[0.5, 1.0, 0.66], [0.500001, 0.99, 0.65]])
    assert [list(i) for i in tags.select_tags(scores, thresholds)] == [[2], [0]]
    assert [list(i) for i in tags.select_tags(scores, thresholds, delete_tag_index=[2])] == [[], [0]]
    assert tags.join_tags(["a", "b "], []) == "" and tags.join_tags(["a", "b "], [0, 1]) == "a | b "


def test_generate_tag_uses_the_file_thresholds(ram_plus):
    model, scores = ram_plus
    threshold = tags.read_thresholds(HERE / "thresholds.txt", 32, 0.68)
    np.testing.assert_array_equal(model.class_threshold, threshold)
    assert (threshold == 1.0).sum() == 4
    en, cn = model.generate_tag(inputs()["pixel_values"])
    assert en == expected("ram_plus")[1]["en"]
    for i, names in enumerate(en):
        chosen = [model.tag_list[k] for k in np.flatnonzero(scores[i] > threshold)]
        assert names == " | ".join(chosen)
        assert not any(model.tag_list[k] in chosen for k in np.flatnonzero(threshold == 1.0))
    assert any(c.endswith(" ") for c in cn[1].split(" | "))  # Chinese names keep their trailing spaces


def test_user_threshold_overrides_every_tag(ram_plus):
    model, scores = ram_plus
    pixels = inputs()["pixel_values"]
    assert model.generate_tag(pixels, threshold=1.0) == (["", ""], ["", ""])
    en, cn = model.generate_tag(pixels, threshold=0.0)
    assert en == [" | ".join(model.tag_list)] * 2 and cn == [" | ".join(model.tag_list_chinese)] * 2
    per_tag = np.full(32, 1.0, np.float32)
    per_tag[[3, 5]] = 0.0  # index 3 has a file threshold of 1.0: an explicit override can fire it
    assert model.generate_tag(pixels, threshold=per_tag)[0] == [f"{model.tag_list[3]} | {model.tag_list[5]}"] * 2
    with pytest.raises(DataError, match="one per tag"):
        model.generate_tag(pixels, threshold=[0.5, 0.5])
    median = float(np.median(scores))
    assert model.generate_tag(pixels, threshold=median)[0] == [
        " | ".join(model.tag_list[k] for k in np.flatnonzero(row > np.float32(median))) for row in scores]


def test_delete_tag_index_and_scores(ram_plus):
    model, scores = ram_plus
    pixels = inputs()["pixel_values"]
    got = model.get_tag_scores(pixels)
    assert got.shape == (2, 32) and got.dtype == np.float32
    assert np.abs(got - scores).max() < 1e-5
    first = [int(model.select_tags(scores)[i][0]) for i in range(2)]
    model.delete_tag_index = first
    try:
        for i, idx in enumerate(model.select_tags(got)):
            assert first[i] not in idx
    finally:
        model.delete_tag_index = []
    config = fixture_config("ram_plus", delete_tag_index=first)
    assert ram.RAMPlus(config).delete_tag_index == first


def test_image_inputs_go_through_the_image_processor():
    model = ram.RAMPlus(fixture_config("ram_plus"))
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    direct = model.get_tag_logits(model.image_processor([image]))
    np.testing.assert_array_equal(model.get_tag_logits([image]), direct)
    assert model.image_processor([image]).shape == (1, 3, 96, 96)

"""The guide's preprocessing step (``openclip_preprocess.py``): model inputs on disk for ais_bench — pixels float32
(3, S, S) and token ids int64 (L,), as ``.npy`` or raw ``.bin``, flat names ais_bench's outputs pair by; resumable,
refusing a folder of other settings or foreign files; relative paths from a temporary working directory."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mindram
from mindram.embeddings.model_inputs import write_model_inputs
from mindram.errors import DataError
from tests.unit.test_clip_model import tiny


@pytest.fixture(name="model", scope="module")
def fixture_model():
    model = mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32")))
    model.set_train(False)
    return model


@pytest.fixture(name="images")
def fixture_images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("imgs/sub").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 20, 20)).save("imgs/red.png")
    Image.new("RGB", (30, 44), (20, 20, 200)).save("imgs/sub/blue.png")
    Path("imgs/bad.png").write_bytes(b"not a png")
    return ["imgs/red.png", "imgs/sub/blue.png", "imgs/bad.png"]


def test_raw_bin_inputs_and_resume(model, images):
    texts, names = ["a red square", "something blue", "red again"], ["red_0", "blue_0", "red_1"]
    summary = write_model_inputs(model, "prep", images=images, texts=texts, text_names=names, file_format="bin")
    assert summary["images"]["num_written"] == 2 and summary["images"]["num_errors"] == 1
    assert sorted(p.name for p in Path("prep/images").iterdir()) == ["blue.bin", "errors.jsonl", "red.bin"]
    assert [json.loads(line)["id"] for line in Path("prep/images/errors.jsonl").read_text().splitlines()] == ["bad"]
    assert sorted(p.name for p in Path("prep/texts").glob("*.bin")) == ["blue_0.bin", "red_0.bin", "red_1.bin"]
    raw = Path("prep/images/red.bin").read_bytes()
    assert len(raw) == 3 * 32 * 32 * 4   # what ais_bench feeds to a (1, 3, 32, 32) float32 input as it is
    np.testing.assert_array_equal(np.frombuffer(raw, np.float32).reshape(3, 32, 32),
                                  model.image_processor.preprocess("imgs/red.png"))
    ids = np.frombuffer(Path("prep/texts/red_1.bin").read_bytes(), np.int64)
    np.testing.assert_array_equal(ids, np.asarray(mindram.tokenize(["red again"]))[0])
    again = write_model_inputs(model, "prep", images=images, texts=texts, text_names=names, file_format="bin")
    assert again["images"]["skipped_existing"] == 2 and again["texts"]["num_written"] == 0   # resumed
    with pytest.raises(DataError, match=r"prep holds model inputs written with other settings .*file_format"):
        write_model_inputs(model, "prep", images=images, file_format="npy")
    write_model_inputs(model, "prep", images=images[:1], file_format="npy", overwrite=True)
    assert sorted(p.name for p in Path("prep/images").iterdir()) == ["errors.jsonl", "red.npy"]  # no stale .bin
    value = np.load("prep/images/red.npy")
    assert value.dtype == np.float32 and value.shape == (3, 32, 32)


def test_names_ais_bench_cannot_keep_apart_are_refused(model, images):
    Image.new("RGB", (32, 32)).save("imgs/red.v2.png")
    with pytest.raises(DataError, match=r"image input name 'red.v2' .*first '.'"):
        write_model_inputs(model, "prep", images=["imgs/red.v2.png"])
    Image.new("RGB", (32, 32)).save("imgs/sub/red.png")
    with pytest.raises(DataError, match=r"image input name 'red' is used by 2 items"):
        write_model_inputs(model, "prep", images=["imgs/red.png", "imgs/sub/red.png"])
    Path("other/images").mkdir(parents=True)
    np.save("other/images/x.npy", np.zeros(3))
    with pytest.raises(DataError, match=r"other holds .npy/.bin files but no inputs.json"):
        write_model_inputs(model, "other", images=images[:1])
    assert Path("other/images/x.npy").is_file()

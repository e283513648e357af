"""``python -m mindram.export ... --single_file``: each CLIP tower one ``.onnx`` file with its weights inside, for
tools that read no external data; a tower over protobuf's 2 GiB is refused with one line. Run from a temporary
working directory with relative paths."""
import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

import mindram
import mindram.export.common as common
from mindram.export.__main__ import main
from tests.unit.test_clip_model import tiny

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(name="saved_model")
def fixture_saved_model(tmp_path, monkeypatch):
    model = mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32")))
    model.set_train(False)
    model.save_pretrained(tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    # as if the tower were a full-size one (tiny towers are below the 32 MiB that keeps weights apart)
    monkeypatch.setattr(common, "ONNX_INLINE_WEIGHTS_LIMIT", 0)
    return model


@pytest.mark.slow
def test_single_file_keeps_the_weights_inside(saved_model):
    assert main(["--model", "model", "--format", "onnx", "--towers", "image", "--output", "e"]) == 0
    assert sorted(p.name for p in Path("e").iterdir()) == ["export.json", "image_encoder.onnx",
                                                           "image_encoder.onnx.data"]
    # the same export with --single_file, over the first: no weights file beside the graph, stale or new
    assert main(["--model", "model", "--format", "onnx", "--towers", "image", "--output", "e", "--overwrite",
                 "--single_file"]) == 0
    assert sorted(p.name for p in Path("e").iterdir()) == ["export.json", "image_encoder.onnx"]
    manifest = json.loads(Path("e/export.json").read_text())
    assert sorted(manifest["graphs"]["image_encoder"]["files"]) == ["onnx"]
    # readable from its bytes alone, as by a tool that never opens a second file
    session = ort.InferenceSession(Path("e/image_encoder.onnx").read_bytes(), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    got = session.run(None, {"image": pixels})[0]
    np.testing.assert_allclose(got, saved_model.get_image_features(ms.Tensor(pixels)).asnumpy(), atol=1e-5)


def test_single_file_refuses_a_tower_over_the_limit(saved_model, capsys, monkeypatch):
    monkeypatch.setattr(common, "ONNX_SINGLE_FILE_LIMIT", 4096)   # as if the tower had more than 2 GiB
    assert main(["--model", "model", "--format", "onnx", "--towers", "image", "--output", "big",
                 "--single_file"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "image_encoder.onnx" in err and "without --single_file" in err, err
    assert not Path("big/export.json").exists() and not Path("big/image_encoder.onnx").exists()
    assert main(["--model", "model", "--format", "mindir", "--output", "m", "--single_file"]) == 2
    assert "ONNX option" in capsys.readouterr().err

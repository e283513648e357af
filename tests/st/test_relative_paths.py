"""Every command that writes a file, run as users run it: from their own working directory, with bare and
``./`` output names (the atomic writer used to split a bare name into an empty directory, wrote the file, then
failed with ``FileNotFoundError: ''`` and left a temporary behind). Each case checks the output is there, the
command succeeded, and no hidden temporary is left in the working directory."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import save_file

import mindram
from mindram.models.clip.convert import to_open_clip_state_dict
from mindram.models.ram import convert as ram_convert
from tests.conftest import FIXTURES, ROOT
from tests.fixtures.ram.loader import fixture_config, reference_state_dict
from tests.st.test_run_mindformer import DEMO, TINY
from tests.unit.test_clip_model import tiny

pytestmark = pytest.mark.slow


def run_in(cwd, *args):
    """``python ARGS`` from ``cwd`` (scripts given relative to the repository are made absolute)."""
    args = [str(ROOT / a) if isinstance(a, str) and a.endswith(".py") and (ROOT / a).is_file() else str(a)
            for a in args]
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=str(cwd), timeout=600,
                            env=dict(os.environ, GLOG_v="3", PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def no_temporaries(folder):
    leftovers = [p.name for p in folder.rglob(".*") if ".tmp" in p.name]
    assert not leftovers, leftovers


def tiny_clip_weights(folder):
    model = mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32.laion2b_s34b_b79k")))
    save_file(to_open_clip_state_dict(model.state_dict()), str(folder / "ViT-B-32.safetensors"))
    return model


@pytest.mark.parametrize("name", ["clip_vit_b_32.ckpt", "./clip_vit_b_32.safetensors"])
def test_convert_clip_into_the_working_directory(tmp_path, name):
    tiny_clip_weights(tmp_path)
    run_in(tmp_path, "convert_weights/convert_clip.py", "--torch_path", "ViT-B-32.safetensors",
           "--mindspore_path", name)
    stem = os.path.splitext(os.path.basename(name))[0]
    assert (tmp_path / os.path.basename(name)).is_file() and (tmp_path / f"{stem}.yaml").is_file()
    no_temporaries(tmp_path)


def test_convert_ram_into_the_working_directory(tmp_path, monkeypatch):
    """docs/migrating.md's ``--mindspore_path ram_plus.safetensors`` (in process: the reduced fixture
    architecture is not in the catalog, so the shape rule is pointed at it)."""
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in reference_state_dict("ram_plus").items()}
    torch.save({"model": sd}, tmp_path / "ram_plus_tiny.pth")
    monkeypatch.setattr(ram_convert, "config_from_state_dict", lambda *a, **k: fixture_config("ram_plus"))
    monkeypatch.chdir(tmp_path)
    assert ram_convert.main(["--torch_path", "ram_plus_tiny.pth", "--mindspore_path", "ram_plus.safetensors"]) == 0
    assert (tmp_path / "ram_plus.safetensors").is_file() and (tmp_path / "ram_plus.yaml").is_file()
    no_temporaries(tmp_path)


def test_paddleclas_translation_into_the_working_directory(tmp_path):
    (tmp_path / "RAM_plus.yaml").write_bytes((FIXTURES / "paddleclas" / "RAM_plus.yaml").read_bytes())
    run_in(tmp_path, "-m", "mindram.compat.paddleclas", "RAM_plus.yaml", "-o", "run_ram.yaml")
    assert "translated from the PaddleClas config" in (tmp_path / "run_ram.yaml").read_text(encoding="utf-8")
    no_temporaries(tmp_path)


def test_train_predict_export_and_embed_with_relative_paths(tmp_path):
    """run_mindformer.py train into ``run``, predict into a bare ``.jsonl``, export into a bare folder, embed
    into a bare folder: the chain of commands a user types in their own directory."""
    Image.new("RGB", (32, 32), (220, 30, 30)).save(tmp_path / "red.png")
    os.mkdir(tmp_path / "photos")
    Image.new("RGB", (40, 36), (30, 40, 220)).save(tmp_path / "photos" / "blue.png")
    run_in(tmp_path, "run_mindformer.py", "--config", DEMO, "--run_mode", "train", "--output_dir", "run",
           "--options", *TINY, "eval_dataset=null")
    assert (tmp_path / "run" / "final").is_dir()
    run_in(tmp_path, "run_mindformer.py", "--config", DEMO, "--run_mode", "predict", "--load_checkpoint",
           "run/final", "--output_dir", "pred", "--predict_data", "photos", "--predict_output", "predictions.jsonl",
           "--options", *TINY)
    assert (tmp_path / "predictions.jsonl").read_text(encoding="utf-8").count("\n") == 1
    run_in(tmp_path, "-m", "mindram.export", "--model", "run/final", "--format", "onnx", "--output", "exported")
    assert (tmp_path / "exported" / "export.json").is_file()
    run_in(tmp_path, "scripts/export_embeddings.py", "--model", "run/final", "--images", "photos",
           "--out", "vectors", "--batch_size", "2", "--num_workers", "1")
    assert any((tmp_path / "vectors").rglob("*.npy"))
    no_temporaries(tmp_path)


def test_make_shards_and_calibrate_into_the_working_directory(tmp_path):
    """scripts/make_shards.py --output shards; python -m mindram.calibrate --output thresholds.txt (a tiny RAM++
    from random init: the file and its report are what is checked, not the thresholds)."""
    from tests.st.test_calibration_cli import DEMO as RAM_DEMO, TINY_MODEL
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        Image.new("RGB", (24, 24), colour).save(tmp_path / f"{i}.png")
    (tmp_path / "captions.csv").write_text("filepath,title\n0.png,red\n1.png,green\n2.png,blue\n", encoding="utf-8")
    run_in(tmp_path, "scripts/make_shards.py", "--csv", "captions.csv", "--output", "shards", "--shard_size", "2")
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["00000.tar", "00001.tar", "sizes.json"]
    run_in(tmp_path, "-m", "mindram.calibrate", "--config", RAM_DEMO, "--output", "thresholds.txt",
           "--output_dir", "cal", "--options", *TINY_MODEL, "eval_dataset.data_loader.num_samples=16")
    assert (tmp_path / "thresholds.txt").is_file() and (tmp_path / "cal" / "calibration_metrics.json").is_file()
    no_temporaries(tmp_path)


def test_teacher_features_into_the_working_directory(tmp_path, monkeypatch):
    """python -m mindram.extract_teacher_features --config run.yaml --output teacher_store (in process: the tiny
    teacher of tests/st/test_teacher_features.py)."""
    from mindram.extract_teacher_features import PROG, main
    from mindram.utils.cli import run_cli
    from tests.st.test_teacher_features import write_config, write_dataset
    write_dataset(tmp_path / "data")
    write_config(tmp_path / "run.yaml", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    assert run_cli(main, ["--config", "run.yaml", "--output", "teacher_store", "--batch_size", "5"], prog=PROG) == 0
    assert (tmp_path / "teacher_store" / "manifest.json").is_file()
    no_temporaries(tmp_path)

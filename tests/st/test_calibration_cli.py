"""python -m mindram.calibrate on the synthetic tagging set: calibrated thresholds raise F1 on held-out images."""
import subprocess
import sys

import numpy as np
import pytest

from mindram import Trainer
from mindram.models.ram.tags import read_thresholds
from tests.conftest import ROOT
from tests.st.test_run_mindformer import last_json
from tests.st.test_run_mindformer_tagging import DEMO

TINY_MODEL = [
    "model.model_config.image_size=32",
    "model.model_config.vision_config={image_size: 32, patch_size: 4, embed_dim: 16, depths: [1, 1], "
    "num_heads: [1, 2], window_size: 4, drop_path_rate: 0.0}",
    "model.model_config.head_config={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, "
    "intermediate_size: 64}",
    "model.model_config.label_embed_dim=16", "tagging.teacher=null", "runner_config.num_workers=1",
    "eval_dataset.data_loader.image_size=32", "train_dataset.data_loader.image_size=32",
]


def options(items):
    return {key: value for key, _, value in (item.partition("=") for item in items)}


def parsed(items):
    from mindram.config import parse_scalar
    return {key: parse_scalar(value) for key, value in options(items).items()}


def calibrate(*args):
    return subprocess.run([sys.executable, "-m", "mindram.calibrate", *map(str, args)], capture_output=True,
                          text=True, cwd=str(ROOT), timeout=600)


@pytest.mark.slow
def test_calibrated_thresholds_raise_held_out_f1(tmp_path):
    trainer = Trainer(args=DEMO, overrides=parsed(TINY_MODEL + [
        f"output_dir={tmp_path / 'train'}", "train_dataset.data_loader.num_samples=1024",
        "runner_config.batch_size=32", "runner_config.max_steps=60", "runner_config.save_steps=60",
        "runner_config.logging_steps=20", "eval_dataset.data_loader.num_samples=16"]))
    trainer.train()
    model_dir = tmp_path / "train" / "final"

    calibration_set = ["eval_dataset.data_loader.split=train", "eval_dataset.data_loader.num_samples=256",
                       "eval_dataset.data_loader.seed=7"]
    result = calibrate("--config", DEMO, "--load_checkpoint", model_dir, "--output_dir", tmp_path / "cal",
                       "--options", *TINY_MODEL, *calibration_set)
    assert result.returncode == 0, result.stderr[-3000:]
    report = last_json(result.stdout)
    assert report["after"]["CF1"] > report["before"]["CF1"] and report["num_images"] == 256
    assert "CF1 " in result.stdout and " -> " in result.stdout
    file = tmp_path / "cal" / "calibrated_thresholds.txt"
    thresholds = read_thresholds(file, 19, 0.5)
    assert report["threshold_file"] == str(file) and len(file.read_text().split()) == 19
    assert not np.allclose(thresholds, 0.5)

    # held out: the synthetic test split, evaluated with the default and with the calibrated thresholds
    held_out = parsed(TINY_MODEL + [f"load_checkpoint={model_dir}", "eval_dataset.data_loader.num_samples=256",
                                    f"output_dir={tmp_path / 'eval'}"])
    default = Trainer(args=DEMO, overrides=held_out).evaluate()
    calibrated = Trainer(args=DEMO, overrides={**held_out, "tagging.threshold_file": str(file),
                                               "output_dir": str(tmp_path / "eval2")}).evaluate()
    assert calibrated["mAP"] == default["mAP"]  # thresholds change the decisions, not the ranking
    assert calibrated["CF1"] > default["CF1"] + 0.02, (default, calibrated)

    # the file is not replaced silently
    again = calibrate("--config", DEMO, "--load_checkpoint", model_dir, "--output_dir", tmp_path / "cal",
                      "--options", *TINY_MODEL, *calibration_set)
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    bad = calibrate("--config", DEMO, "--load_checkpoint", model_dir, "--target", "precision@2",
                    "--output", tmp_path / "x.txt", "--options", *TINY_MODEL, *calibration_set)
    assert bad.returncode == 2 and "calibration target 'precision@2'" in bad.stderr
    assert not (tmp_path / "x.txt").exists()

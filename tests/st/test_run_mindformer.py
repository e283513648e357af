"""run_mindformer.py end to end through a subprocess, as users run it: train, eval, predict, errors."""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from tests.conftest import ROOT

DEMO = ROOT / "configs" / "clip" / "run_clip_demo_synthetic.yaml"
TINY = [
    "model.model_config.projection_dim=32",
    "model.model_config.vision_config={image_size: 32, patch_size: 8, hidden_size: 32, num_hidden_layers: 2, "
    "num_attention_heads: 2, intermediate_size: 64, hidden_act: gelu}",
    "model.model_config.text_config={vocab_size: 49408, max_position_embeddings: 16, hidden_size: 32, "
    "num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64, hidden_act: gelu}",
    "train_dataset.data_loader.num_samples=64", "train_dataset.data_loader.image_size=32",
    "eval_dataset.data_loader.num_samples=32", "eval_dataset.data_loader.image_size=32",
    "runner_config.batch_size=16", "runner_config.eval_batch_size=16", "runner_config.max_steps=6",
    "runner_config.logging_steps=2", "runner_config.save_steps=3", "runner_config.num_workers=1",
]


def run(*args, cwd=ROOT, env=None):
    """run_mindformer.py with ``args`` in a subprocess (from ``cwd``; ``env``: extra environment variables)."""
    env = dict(os.environ, GLOG_v="3", **(env or {}))
    return subprocess.run([sys.executable, str(ROOT / "run_mindformer.py"), *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=str(cwd), timeout=600)


def last_json(stdout):
    """The JSON document the command printed (it starts at the beginning of a line)."""
    starts = [i for i, line in enumerate(stdout.splitlines()) if line[:1] in "{["]
    text = "\n".join(stdout.splitlines()[starts[0]:])
    return json.JSONDecoder().raw_decode(text)[0]


def test_train_eval_predict(tmp_path):
    out = tmp_path / "run"
    trained = run("--config", DEMO, "--run_mode", "train", "--output_dir", out, "--options", *TINY)
    assert trained.returncode == 0, trained.stderr[-3000:]
    summary = last_json(trained.stdout)
    assert summary["global_step"] == 6 and np.isfinite(summary["final_loss"])
    assert "zero_shot_top1" in summary["eval"] and "image_to_text_R@5" in summary["eval"]
    assert "zero-shot top-1" in trained.stdout
    assert (out / "checkpoint-6" / "trainer_state.json").is_file()
    assert (out / "train_metrics.json").is_file() and (out / "eval_metrics.json").is_file()

    evaluated = run("--config", DEMO, "--run_mode", "eval", "--output_dir", tmp_path / "eval",
                    "--load_checkpoint", out / "final", "--options", *TINY)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert last_json(evaluated.stdout)["zero_shot_top1"] == summary["eval"]["zero_shot_top1"]

    image = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (220, 30, 30)).save(image)
    predicted = run("--config", DEMO, "--run_mode", "predict", "--predict_data", image, "--top_k", "3",
                    "--load_checkpoint", out / "final", "--output_dir", tmp_path / "pred", "--options", *TINY)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    result = last_json(predicted.stdout)
    assert len(result) == 1 and len(result[0]) == 3 and {"score", "label"} <= set(result[0][0])

    resumed = run("--config", DEMO, "--run_mode", "train", "--output_dir", out, "--resume_training", "latest",
                  "--options", *TINY[:-4], "runner_config.max_steps=8", "runner_config.logging_steps=2",
                  "runner_config.save_steps=4", "runner_config.num_workers=1")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert last_json(resumed.stdout)["global_step"] == 8


def test_config_error_is_reported_before_work(tmp_path):
    result = run("--config", DEMO, "--run_mode", "train", "--output_dir", tmp_path,
                 "--options", "runner_config.batch_sise=3")
    assert result.returncode == 2
    assert "unknown key(s) ['batch_sise']" in result.stderr
    assert not any(tmp_path.iterdir())

"""Trainer on tiny configs: loss decreases, exact resume, checkpoints, NaN stop, accumulation, zero-shot eval."""
import json

import numpy as np
import pytest

import mindram
from mindram.config import MindFormerConfig
from mindram.errors import ConfigError
from mindram.trainer import Trainer
from mindram.trainer.tasks.base import TrainingStopped
from tests.conftest import ROOT

DEMO = ROOT / "configs" / "clip" / "run_clip_demo_synthetic.yaml"


def tiny_run_config(output_dir, **runner):
    cfg = MindFormerConfig(str(DEMO))
    cfg.merge_from_dict({
        "output_dir": str(output_dir),
        "model.model_config.projection_dim": 32,
        "model.model_config.vision_config": {"image_size": 32, "patch_size": 8, "hidden_size": 32,
                                             "num_hidden_layers": 2, "num_attention_heads": 2,
                                             "intermediate_size": 64, "hidden_act": "gelu"},
        "model.model_config.text_config": {"vocab_size": 49408, "max_position_embeddings": 16, "hidden_size": 32,
                                           "num_hidden_layers": 2, "num_attention_heads": 2,
                                           "intermediate_size": 64, "hidden_act": "gelu"},
        "train_dataset.data_loader": {"type": "SyntheticCaptions", "num_samples": 48, "image_size": 32,
                                      "split": "train"},
        "eval_dataset.data_loader": {"type": "SyntheticCaptions", "num_samples": 24, "image_size": 32,
                                     "split": "test"},
        "runner_config": {"batch_size": 8, "eval_batch_size": 12, "max_steps": 8, "logging_steps": 1,
                          "save_steps": None, "keep_checkpoint_max": 2, "num_workers": 1, "train_transform": True,
                          **runner},
        "lr_schedule": {"type": "CosineWithWarmUpLR", "learning_rate": 2e-3, "warmup_steps": 2, "total_steps": 8},
    })
    return cfg


def params_of(trainer):
    return trainer.model.state_dict()


def test_few_steps_decrease_the_loss(tmp_path):
    trainer = Trainer(args=tiny_run_config(tmp_path, max_steps=12, logging_steps=3),
                      overrides={"lr_schedule.total_steps": 12})
    summary = trainer.train()
    losses = [h["loss"] for h in summary["history"]]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    metrics = json.loads((tmp_path / "train_metrics.json").read_text())
    assert metrics["global_step"] == 12
    assert (tmp_path / "final" / "model.ckpt").is_file() and (tmp_path / "train_log.jsonl").is_file()
    # the final model loads as a plain pretrained directory and the logit scale stayed clamped
    loaded = mindram.CLIPModel.from_pretrained(tmp_path / "final")
    assert float(loaded.logit_scale.asnumpy()[0]) <= np.log(100) + 1e-6


@pytest.mark.parametrize("accumulation", [1, 2])
def test_resume_is_exact(tmp_path, accumulation):
    """N updates in one run == N/2, stop, resume from the checkpoint, N/2 more (params within 1e-6)."""
    steps = 6
    full = Trainer(args=tiny_run_config(tmp_path / "full", max_steps=steps, gradient_accumulation_steps=accumulation),
                   overrides={"lr_schedule.total_steps": steps})
    full.train()
    first = Trainer(args=tiny_run_config(tmp_path / "split", max_steps=steps // 2,
                                         gradient_accumulation_steps=accumulation),
                    overrides={"lr_schedule.total_steps": steps})
    first.train()
    second = Trainer(args=tiny_run_config(tmp_path / "split", max_steps=steps, resume_from_checkpoint="latest",
                                          gradient_accumulation_steps=accumulation),
                     overrides={"lr_schedule.total_steps": steps})
    second.train()
    a, b = params_of(full), params_of(second)
    assert a.keys() == b.keys()
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert worst <= 1e-6, worst
    moved = max(float(np.abs(a[k] - params_of(first)[k]).max()) for k in a)
    assert moved > 1e-4, "the second half must have changed the parameters"


def test_checkpoints_keep_last_n_and_are_complete(tmp_path):
    Trainer(args=tiny_run_config(tmp_path, max_steps=8, save_steps=2, keep_checkpoint_max=2)).train()
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint-"))
    assert names == ["checkpoint-6", "checkpoint-8"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary directories left"
    state = json.loads((tmp_path / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8 and state["epoch"] == 1 and state["step_in_epoch"] == 2


def test_nonfinite_loss_stops_with_a_clear_message(tmp_path):
    trainer = Trainer(args=tiny_run_config(tmp_path))
    weights = trainer.model.state_dict()
    weights["visual.proj"][:] = np.nan
    trainer.model.load_weights(weights)
    with pytest.raises(TrainingStopped, match=r"non-finite loss nan at epoch 0 step 1"):
        trainer.train()


def test_evaluate_reports_zero_shot_and_retrieval(tmp_path):
    trainer = Trainer(args=tiny_run_config(tmp_path))
    metrics = trainer.evaluate()
    for key in ("image_to_text_R@1", "text_to_image_R@10", "zero_shot_top1", "zero_shot_top5"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["num_classes"] == 32 and metrics["num_images"] == 24
    assert json.loads((tmp_path / "eval_metrics.json").read_text())["num_images"] == 24
    predictions = trainer.predict(np.zeros((32, 32, 3), np.uint8), top_k=3)
    assert len(predictions) == 1 and len(predictions[0]) == 3
    assert predictions[0][0]["score"] >= predictions[0][1]["score"]


def test_zero_shot_task_has_no_training(tmp_path):
    cfg = tiny_run_config(tmp_path)
    with pytest.raises(ConfigError, match="no training stage"):
        Trainer(args=cfg, task="zero_shot_image_classification").train()


def test_unknown_task_lists_supported():
    with pytest.raises(KeyError, match="contrastive_language_image_pretrain"):
        Trainer(task="image_captioning")


def test_mixed_precision_training_runs(tmp_path):
    """compute_dtype float16 with a static loss scale: finite losses, master weights stay float32."""
    cfg = tiny_run_config(tmp_path, max_steps=3, loss_scale=1024.0)
    cfg.merge_from_dict({"model.model_config.compute_dtype": "float16"})
    trainer = Trainer(args=cfg)
    before = params_of(trainer)
    summary = trainer.train()
    assert all(np.isfinite(h["loss"]) for h in summary["history"])
    after = params_of(trainer)
    assert all(v.dtype == np.float32 for v in after.values())
    assert max(float(np.abs(after[k] - before[k]).max()) for k in after) > 1e-5


def test_config_sources_are_built_once_per_task(tmp_path, monkeypatch):
    """Training epochs and evaluation passes reuse one record source per section (annotations parsed once)."""
    from mindram.trainer.tasks import base
    built = []
    real = base.build_source
    monkeypatch.setattr(base, "build_source", lambda cfg: built.append(cfg["type"]) or real(cfg))
    trainer = Trainer(args=tiny_run_config(tmp_path / "out", max_steps=2))
    trainer.train()
    trainer.evaluate()
    assert trainer.task.source("train_dataset") is trainer.task.source("train_dataset")
    assert sorted(built) == ["SyntheticCaptions", "SyntheticCaptions"]  # one train, one eval source

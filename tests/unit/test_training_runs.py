"""Training runs own their output directory: no silent overwrite or mixing of runs, resume is exact or refused,
killed saves leave nothing behind, the log has no duplicated steps, checkpoints get the normal file modes."""
import json
import logging
import os
import shutil

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

import mindram
from mindram.errors import CheckpointError, ConfigError, OutputExistsError
from mindram.trainer import Trainer
from mindram.trainer.checkpointing import (list_checkpoints, load_checkpoint, previous_run_artefacts,
                                          resolve_checkpoint, save_checkpoint)
from tests.unit.test_trainer import tiny_run_config


def run_config(output_dir, **runner):
    """The tiny CLIP run config, ``max_steps`` 2 unless given, with an lr schedule spanning ``max_steps``."""
    runner.setdefault("max_steps", 2)
    cfg = tiny_run_config(output_dir, **runner)
    cfg.lr_schedule.pop("total_steps")
    return cfg


def train(output_dir, **runner):
    return Trainer(args=run_config(output_dir, **runner)).train()


def checkpoint_names(output_dir):
    return [p.name for p in list_checkpoints(output_dir)]


def run_id_of(checkpoint):
    return json.loads((checkpoint / "trainer_state.json").read_text())["run_id"]


def logged_steps(output_dir):
    return [json.loads(line)["step"] for line in (output_dir / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 2-update run saving every update (checkpoint-1, -2, final/, metrics, log), written under
    umask 027; tests copy it before changing it."""
    directory = tmp_path_factory.mktemp("finished") / "run"
    old = os.umask(0o027)
    try:
        train(directory, save_steps=1)
    finally:
        os.umask(old)
    return directory


@pytest.fixture
def previous_run(finished_run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(finished_run, target)
    return target


# ---- A: a new run never overwrites or mixes with a previous one ----
def test_new_run_into_a_previous_runs_output_dir_is_refused(previous_run):
    before = (previous_run / "train_metrics.json").read_text()
    with pytest.raises(OutputExistsError) as info:
        train(previous_run)
    message = str(info.value)
    assert "\n" not in message and str(previous_run) in message
    assert "--resume_training latest" in message and "runner_config.resume_from_checkpoint" in message
    assert "runner_config.overwrite_output_dir: true" in message
    assert (previous_run / "train_metrics.json").read_text() == before
    assert checkpoint_names(previous_run) == ["checkpoint-1", "checkpoint-2"]


@pytest.mark.parametrize("name", ["checkpoint-5/", "final/", "train_log.jsonl", "eval_metrics.json"])
def test_each_output_of_a_run_marks_a_previous_run(tmp_path, name):
    (tmp_path / "notes.txt").write_text("mine")   # neither unrelated files nor folders count
    (tmp_path / "other_experiment" / "checkpoint-1").mkdir(parents=True)
    (tmp_path / ".checkpoint-3-abcdef").mkdir()
    assert previous_run_artefacts(tmp_path) == []
    (tmp_path / name).mkdir() if name.endswith("/") else (tmp_path / name).write_text("{}")
    assert previous_run_artefacts(tmp_path) == [tmp_path / name.rstrip("/")]
    with pytest.raises(OutputExistsError, match=name.rstrip("/")):
        train(tmp_path)


def test_overwrite_output_dir_removes_the_previous_run(previous_run, caplog):
    old_run = run_id_of(previous_run / "checkpoint-2")
    (previous_run / "eval_metrics.json").write_text("{}")
    (previous_run / "notes.txt").write_text("mine")
    with caplog.at_level(logging.WARNING, logger="mindram.trainer.checkpointing"):
        summary = train(previous_run, max_steps=1, overwrite_output_dir=True)
    assert "overwrite_output_dir" in caplog.text and "checkpoint-2" in caplog.text
    assert checkpoint_names(previous_run) == ["checkpoint-1"]
    assert run_id_of(previous_run / "checkpoint-1") == summary["run_id"] != old_run
    assert logged_steps(previous_run) == [1]
    assert not (previous_run / "eval_metrics.json").exists(), "metrics of the previous run are not kept"
    assert (previous_run / "notes.txt").read_text() == "mine"
    assert json.loads((previous_run / "train_metrics.json").read_text())["run_id"] == summary["run_id"]


def test_keep_last_n_and_latest_consider_only_the_current_run(tmp_path):
    """An old run's higher step numbers neither push out the new run's checkpoints nor win 'latest'."""
    cell = nn.Dense(2, 2)
    for step in (10, 20):
        save_checkpoint(tmp_path, cell, {"global_step": step, "run_id": "old"}, keep_last=2)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, cell, {"global_step": step, "run_id": "new"}, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path, run_id="new")] == ["checkpoint-2", "checkpoint-3"]
    assert [p.name for p in list_checkpoints(tmp_path, run_id="old")] == ["checkpoint-10", "checkpoint-20"]
    with pytest.raises(CheckpointError, match=r"2 runs \(new, old\)"):
        resolve_checkpoint("latest", tmp_path)
    with pytest.raises(OutputExistsError, match="run 'old'"):
        save_checkpoint(tmp_path, cell, {"global_step": 10, "run_id": "new"})


def test_save_checkpoint_round_trips_the_parameters(tmp_path):
    cell, other = nn.Dense(2, 2), nn.Dense(2, 2)
    other.weight.set_data(ms.Tensor(np.zeros((2, 2), np.float32)))
    path = save_checkpoint(tmp_path, cell, {"global_step": 1, "run_id": "r"})
    assert load_checkpoint(path, other)["run_id"] == "r"
    np.testing.assert_array_equal(other.weight.asnumpy(), cell.weight.asnumpy())


# ---- B: resume is exact or refused ----
def test_a_new_run_can_start_from_a_training_checkpoints_weights(previous_run, tmp_path):
    """What the refused resume suggests: load_checkpoint=<checkpoint dir> (its optimizer state is skipped)."""
    cfg = run_config(tmp_path / "new")
    cfg.load_checkpoint = str(previous_run / "checkpoint-2")
    model = Trainer(args=cfg).model
    final = mindram.CLIPModel.from_pretrained(previous_run / "final").state_dict()
    assert all(np.array_equal(value, final[name]) for name, value in model.state_dict().items())


@pytest.mark.parametrize("change, key, saved, now", [
    ({"batch_size": 4}, "runner_config.batch_size", 8, 4),
    ({"gradient_accumulation_steps": 2}, "runner_config.gradient_accumulation_steps", 1, 2),
    ({"seed": 1}, "runner_config.seed", 0, 1),
    ({"train_transform": False}, "runner_config.train_transform", True, False),
    ({"train_dataset.data_loader.num_samples": 40}, "train_dataset.num_samples", 48, 40),
    ({"train_dataset.shuffle": False}, "train_dataset.shuffle", True, False),
])
def test_resume_with_settings_that_change_the_run_is_refused(previous_run, change, key, saved, now):
    cfg = run_config(previous_run, resume_from_checkpoint="latest",
                     **{k: v for k, v in change.items() if "." not in k})
    cfg.merge_from_dict({k: v for k, v in change.items() if "." in k})
    with pytest.raises(ConfigError) as info:
        Trainer(args=cfg).train()
    message = str(info.value)
    assert "\n" not in message and f"{key}: saved {saved!r}, now {now!r}" in message, message
    assert "checkpoint-2" in message
    assert checkpoint_names(previous_run) == ["checkpoint-1", "checkpoint-2"]


def test_resume_before_the_latest_checkpoint_keeps_it_unless_overwrite(previous_run):
    """Resuming at update 1 would replace checkpoint-2 of the same run: refused, nothing deleted."""
    cfg = run_config(previous_run, max_steps=3, resume_from_checkpoint=str(previous_run / "checkpoint-1"))
    with pytest.raises(OutputExistsError, match=r"would replace this run's later checkpoint\(s\) checkpoint-2"):
        Trainer(args=cfg).train()
    assert checkpoint_names(previous_run) == ["checkpoint-1", "checkpoint-2"]
    assert logged_steps(previous_run) == [1, 2]


def test_resume_from_an_earlier_checkpoint_replays_the_rest_of_the_same_run(previous_run, caplog):
    """Resuming at update 1 of a run that reached update 2 (overwrite_output_dir discards checkpoint-2): same
    run id, no step logged twice (D), the interrupted save's temporary removed (C); training longer (the lr
    schedule spans max_steps) and a changed optimizer setting are applied with a warning naming them (B)."""
    run = run_id_of(previous_run / "checkpoint-2")
    stale = previous_run / ".checkpoint-3-abcdef"
    stale.mkdir()
    (stale / "train_state.ckpt").write_bytes(b"partial")
    with open(previous_run / "train_log.jsonl", "a") as log:
        log.write('{"step": 3, "lo')   # the kill tore the last record
    cfg = run_config(previous_run, max_steps=3, save_steps=1, keep_checkpoint_max=3, overwrite_output_dir=True,
                     resume_from_checkpoint=str(previous_run / "checkpoint-1"))
    cfg.merge_from_dict({"optimizer.weight_decay": 0.2})
    with caplog.at_level(logging.INFO):
        summary = Trainer(args=cfg).train()
    assert "lr_schedule.total_steps: saved 2, now 3; optimizer.weight_decay: saved 0.1, now 0.2" in caplog.text
    assert not stale.exists() and ".checkpoint-3-abcdef" in caplog.text
    assert logged_steps(previous_run) == [1, 2, 3] and [h["step"] for h in summary["history"]] == [1, 2, 3]
    assert summary["run_id"] == run and run_id_of(previous_run / "checkpoint-3") == run
    assert checkpoint_names(previous_run) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]


# ---- E: checkpoints get umask-derived modes ----
def test_checkpoint_directories_and_files_follow_the_umask(finished_run):
    checkpoint = finished_run / "checkpoint-2"
    assert checkpoint.stat().st_mode & 0o777 == 0o750
    for name in ("trainer_state.json", "config.yaml", "train_state.ckpt"):
        assert (checkpoint / name).stat().st_mode & 0o777 == 0o640, name


def test_epochs_completed_counts_an_epoch_that_ends_on_the_last_step(finished_run, tmp_path):
    """48 samples at batch 8: 6 updates are one whole epoch (the summary used to say 0: the loop stopped on the
    last step before it counted the epoch's end); 2 updates are none."""
    summary = train(tmp_path / "run", max_steps=6)
    assert summary["global_step"] == 6 and summary["epochs_completed"] == 1
    assert json.loads((finished_run / "train_metrics.json").read_text())["epochs_completed"] == 0

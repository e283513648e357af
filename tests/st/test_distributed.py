"""Data-parallel training under msrun on the CPU collective backend (MindSpore's own stack, 2 ranks on this
machine): 2 ranks × batch b train exactly as 1 rank × batch 2b (same seed, same steps), with the global-batch
contrastive loss with and without ``local_loss``; a rank that dies fails the job quickly, naming the rank, and its
last checkpoint resumes on one rank. Also the memory levers of big models: gradient checkpointing
(``recompute_config``) and dynamic loss scaling give the same updates.

msrun starts are slow (cluster set-up and one graph compilation per rank): the module runs one reference and
two distributed jobs and checks everything on them. The one-rank reference trains with ``recompute_config`` on
and a dynamic loss scale (powers of two: exact), the distributed jobs without: their equality also shows that
neither lever changes the training.
"""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mindram.data import ResumableSampler
from mindram.models.modeling_utils import read_checkpoint
from mindram.utils.graph import run_in_graph_mode
from tests.conftest import ROOT
from tests.st.test_run_mindformer import TINY, last_json, run

CLIP_DEMO = ROOT / "configs" / "clip" / "run_clip_demo_synthetic.yaml"
STEPS, GLOBAL_BATCH, RANKS = 12, 8, 2
# the tiny CLIP of the CLI tests; a schedule that moves the weights (lr 1e-3 from the first step), 1.5 epochs
SETTINGS = [o for o in TINY if not o.startswith(("runner_config", "eval_dataset"))] + [
    "eval_dataset=null", f"runner_config.max_steps={STEPS}", "runner_config.logging_steps=1",
    "runner_config.save_steps=2", "runner_config.keep_checkpoint_max=20", "runner_config.num_workers=1",
    "lr_schedule.warmup_steps=0", f"lr_schedule.total_steps={STEPS}"]
LEVERS = ["recompute_config.recompute=true", "runner_config.dynamic_loss_scale=true",
          "runner_config.loss_scale=1024", "runner_config.scale_window=4"]
TOLERANCE = 1e-4


def per_rank_batch(ranks):
    return f"runner_config.batch_size={GLOBAL_BATCH // ranks}"


def distributed(out, *options, log_dir, wait=True, config=CLIP_DEMO, settings=SETTINGS):
    """``scripts/run_distribute.sh 2 CONFIG`` (a Popen when not ``wait``)."""
    env = dict(os.environ, GLOG_v="3", PYTHON=sys.executable, LOG_DIR=str(log_dir),
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    command = ["bash", str(ROOT / "scripts" / "run_distribute.sh"), str(RANKS), str(config), "--output_dir",
               str(out), "--options", *settings, per_rank_batch(RANKS), *options]
    if wait:
        return subprocess.run(command, env=env, cwd=str(out.parent), capture_output=True, text=True, timeout=400)
    return subprocess.Popen(command, env=env, cwd=str(out.parent), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


SCALE_STATE = {"loss_scale_value", "current_iterator_step", "last_overflow_iterator_step"}  # dynamic scale only


def max_difference(a, b):
    """Largest absolute difference over the tensors of two checkpoint files (the same names, but for the dynamic
    loss scale's state)."""
    a, b = read_checkpoint(a), read_checkpoint(b)
    assert not (set(a) ^ set(b)) - SCALE_STATE
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64))))
               for k in set(a) & set(b))


def logged_steps(out):
    return [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One rank with the global batch."""
    out = tmp_path_factory.mktemp("one_rank") / "run"
    done = run("--config", CLIP_DEMO, "--output_dir", out, "--options", *SETTINGS, per_rank_batch(1), *LEVERS)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "recompute: 4 block(s) of CLIPModel" in done.stderr
    scale = read_checkpoint(out / f"checkpoint-{STEPS}" / "train_state.ckpt")["loss_scale_value"]
    assert float(np.asarray(scale).reshape(-1)[0]) == 1024 * 2 ** (STEPS // 4)   # grew after every 4 good steps
    return out


@pytest.mark.parametrize("overrides,message", [
    ({"use_parallel": True}, "needs one process per rank started by a distributed launcher: msrun"),
    ({"parallel_config": {"model_parallel": 2}}, "parallel_config.model_parallel: 2 is not supported"),
    ({"parallel": {"enable_parallel_optimizer": True}}, "parallel.enable_parallel_optimizer: true is not supp"),
    ({"parallel": {"parallel_mode": 1}}, "parallel.parallel_mode: 1 is not supported"),
    ({"parallel": {"pipeline": 2}}, "parallel: unknown key(s) ['pipeline']"),
    ({"recompute_config": {"recompute": "yes"}}, "recompute_config.recompute: expected true, false or a list"),
])
def test_parallel_settings_are_checked_before_any_work(overrides, message, tmp_path):
    from mindram import Trainer
    from mindram.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        Trainer(args=CLIP_DEMO, overrides={"output_dir": str(tmp_path / "out"), **overrides})
    assert message in str(error.value)
    assert not (tmp_path / "out").exists()


def test_shards_partition_every_global_batch():
    """Rank r reads order[r::N] of the global order cut to whole global batches: step k of the ranks together is
    step k of one rank with the global batch."""
    one = ResumableSampler(70, 8, seed=3)
    shards = [ResumableSampler(70, 4, seed=3, num_shards=2, shard_id=r) for r in range(2)]
    assert len(one) == 64 and [len(s) for s in shards] == [32, 32]
    for epoch in (0, 1):
        parts = [s.order(epoch).reshape(-1, 4) for s in shards]
        for step, batch in enumerate(one.order(epoch).reshape(-1, 8)):
            assert sorted(np.concatenate([p[step] for p in parts])) == sorted(batch)
    assert not set(shards[0].order(0)) & set(shards[1].order(0))


@pytest.mark.slow
def test_two_ranks_train_as_one_rank_with_the_global_batch(reference, tmp_path):
    out, logs = tmp_path / "two_ranks", tmp_path / "logs"
    done = distributed(out, "runner_config.local_loss=false", log_dir=logs)
    assert done.returncode == 0, done.stderr[-3000:] + "".join(p.read_text()[-2000:] for p in logs.glob("*.log"))
    assert json.loads((out / "train_metrics.json").read_text())["global_step"] == STEPS
    difference = max_difference(reference / "final" / "model.ckpt", out / "final" / "model.ckpt")
    print(f"2 ranks x {GLOBAL_BATCH // RANKS} vs 1 rank x {GLOBAL_BATCH}, {STEPS} AdamW steps, local_loss off: "
          f"max |param diff| {difference:.3g}")
    assert difference <= TOLERANCE
    # the comparison means something: training moved the weights far more than the tolerance
    moved = max_difference(reference / "checkpoint-2" / "train_state.ckpt",
                           reference / f"checkpoint-{STEPS}" / "train_state.ckpt")
    assert moved > 100 * TOLERANCE
    ref_log = [json.loads(line) for line in (reference / "train_log.jsonl").read_text().splitlines()]
    dp_log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in dp_log] == list(range(1, STEPS + 1))   # rank 0 alone wrote the log
    np.testing.assert_allclose([r["loss"] for r in dp_log], [r["loss"] for r in ref_log], atol=1e-5)
    # each rank logged to its own file
    assert "rank 1 mindram" in (logs / "worker_1.log").read_text()
    # the console: rank 0's result once, none of MindSpore's or msrun's own log lines
    assert len(re.findall(r'^  "global_step": ', done.stdout, re.M)) == 1, done.stdout[-3000:]
    assert not re.search(r"^\[(INFO|WARNING|DEBUG)\] |^Start worker process", done.stdout, re.M), done.stdout[-3000:]

    # the same command again: the output_dir holds that run's results; the refusal is the last line, said once
    again = distributed(out, "runner_config.local_loss=false", log_dir=tmp_path / "logs_again")
    lines = again.stderr.strip().splitlines()
    assert again.returncode != 0 and lines, again.stderr[-3000:]
    assert lines[-1].startswith(f"{ROOT / 'scripts' / 'run_distribute.sh'}: error: ") and "--overwrite_output_dir" in \
        lines[-1] and lines[-1].endswith("(rank 0,1)"), again.stderr[-3000:]
    assert sum("error:" in line for line in lines) == 1 and not re.search(r'^  "global_step": ', again.stdout, re.M)


def rank_process(launcher_pid, rank):
    """Pid of the msrun worker of ``rank`` under the launcher this test started (from /proc)."""
    def children(pid):
        found = []
        for task in Path(f"/proc/{pid}/task").glob("*"):
            found += [int(c) for c in (task / "children").read_text().split()]
        return found

    pending, seen = [launcher_pid], []
    while pending:
        pid = pending.pop()
        seen.append(pid)
        try:
            pending += children(pid)
        except OSError:
            continue
    for pid in seen:
        try:
            environ = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0")
                           if "=" in item)
            command = Path(f"/proc/{pid}/cmdline").read_text()
        except OSError:
            continue
        if environ.get("MS_ROLE") == "MS_WORKER" and environ.get("RANK_ID") == str(rank) and \
                "run_mindformer.py" in command:
            return pid
    return None


@pytest.mark.slow
def test_dead_rank_fails_the_job_and_one_rank_resumes_its_checkpoint(reference, tmp_path):
    """local_loss on; rank 1 is killed after checkpoint-2: the job exits non-zero within 60 s naming rank 1, and the
    last checkpoint resumes on one rank (batch 8 = the same global batch) to the reference's weights."""
    out, logs = tmp_path / "killed", tmp_path / "logs"
    job = distributed(out, "runner_config.local_loss=true", log_dir=logs, wait=False)
    try:
        deadline = time.time() + 300
        while not (out / "checkpoint-2" / "trainer_state.json").is_file():
            assert job.poll() is None and time.time() < deadline, "the job ended before checkpoint-2"
            time.sleep(0.05)
        victim = rank_process(job.pid, 1)
        assert victim is not None
        os.kill(victim, 9)
        killed_at = time.time()
        stdout, stderr = job.communicate(timeout=120)
        elapsed = time.time() - killed_at
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    assert elapsed < 60, f"the job took {elapsed:.0f} s to fail after rank 1 died"
    assert f"rank 1 (pid {victim}) died: killed by signal 9" in stderr, stderr[-2000:]
    print(f"rank 1 killed: the job failed {elapsed:.1f} s later")
    # 2 ranks with local_loss == 1 rank with the global batch, up to the checkpoint both wrote
    difference = max_difference(reference / "checkpoint-2" / "train_state.ckpt",
                                out / "checkpoint-2" / "train_state.ckpt")
    print(f"2 ranks x {GLOBAL_BATCH // RANKS} vs 1 rank x {GLOBAL_BATCH}, local_loss on, after 2 steps: "
          f"max |diff| (weights and AdamW moments) {difference:.3g}")
    assert difference <= TOLERANCE

    resumed = run("--config", CLIP_DEMO, "--output_dir", out, "--resume_training", "latest", "--options",
                  *SETTINGS, per_rank_batch(1), "runner_config.local_loss=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert last_json(resumed.stdout)["global_step"] == STEPS
    assert logged_steps(out) == list(range(1, STEPS + 1))
    difference = max_difference(reference / "final" / "model.ckpt", out / "final" / "model.ckpt")
    print(f"killed 2-rank run resumed on 1 rank vs uninterrupted 1-rank run: max |param diff| {difference:.3g}")
    assert difference <= TOLERANCE


TINY_CLIP = dict(projection_dim=16, vision_config=dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                                       num_attention_heads=2, intermediate_size=64),
                 text_config=dict(vocab_size=49408, max_position_embeddings=8, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64))


def clip_gradients(recompute):
    """Loss gradients of a seeded tiny CLIP on a fixed batch (graph mode), with ``recompute`` applied."""
    import mindspore as ms

    from mindram.losses import CLIPWithLoss
    from mindram.models.clip import CLIPConfig, CLIPModel
    from mindram.parallel.recompute import apply_recompute

    ms.set_seed(0)
    model = CLIPModel(CLIPConfig.from_dict(TINY_CLIP))
    marked = apply_recompute(model, recompute)
    grad = ms.value_and_grad(CLIPWithLoss(model), None, model.trainable_params())
    _, grads = run_in_graph_mode(grad, *tiny_batch())
    return marked, [g.asnumpy() for g in grads]


def tiny_batch():
    """A fixed (pixels, token ids) batch of 4 for TINY_CLIP."""
    import mindspore as ms

    rng = np.random.default_rng(0)
    return (ms.Tensor(rng.normal(size=(4, 3, 32, 32)).astype(np.float32)),
            ms.Tensor(rng.integers(1, 1000, size=(4, 8)).astype(np.int32)))


@pytest.mark.slow
def test_recompute_keeps_the_gradients_and_selects_towers_or_blocks():
    from mindram.errors import ConfigError
    from mindram.models.clip import CLIPConfig, CLIPModel
    from mindram.parallel.recompute import apply_recompute, check_recompute_config

    _, plain = clip_gradients(False)
    marked, grads = clip_gradients(True)
    assert marked == [f"{tower}.transformer.resblocks.{i}" for tower in ("visual", "text") for i in (0, 1)]
    assert max(float(np.abs(a - b).max()) for a, b in zip(plain, grads)) <= 1e-6
    assert max(float(np.abs(g).max()) for g in plain) > 1e-3
    model = CLIPModel(CLIPConfig.from_dict(TINY_CLIP))
    assert apply_recompute(model, ["visual"]) == ["visual.transformer.resblocks.0", "visual.transformer.resblocks.1"]
    assert apply_recompute(model, ["text.transformer.resblocks.1"]) == ["text.transformer.resblocks.1"]
    with pytest.raises(ConfigError, match="no cell 'vision'"):
        apply_recompute(model, ["vision"])
    with pytest.raises(ConfigError, match="recompute_config: unknown key"):
        check_recompute_config({"recompute": True, "select_recompute": True})


@pytest.mark.slow
def test_dynamic_loss_scale_skips_overflowing_updates():
    """A scale that overflows the float32 gradients: the update is skipped (weights unchanged), the scale halves."""
    import mindspore as ms
    from mindspore import nn

    from mindram.losses import CLIPWithLoss
    from mindram.models.clip import CLIPConfig, CLIPModel
    from mindram.trainer.train_step import TrainStep

    ms.set_seed(0)
    model = CLIPModel(CLIPConfig.from_dict(TINY_CLIP))
    step = TrainStep(CLIPWithLoss(model), nn.AdamWeightDecay(model.trainable_params(), 1e-3), max_grad_norm=1.0,
                     loss_scale=3e38, dynamic={"scale_factor": 2.0, "scale_window": 2})
    before = {p.name: p.asnumpy().copy() for p in model.trainable_params()}
    loss = float(run_in_graph_mode(step, *tiny_batch()).asnumpy())
    assert np.isfinite(loss)
    assert float(step.scale_sense.asnumpy()) == pytest.approx(1.5e38)
    assert all(np.array_equal(p.asnumpy(), before[p.name]) for p in model.trainable_params())


@pytest.mark.slow
def test_two_ranks_train_ram_plus_as_one_rank_with_the_global_batch(tmp_path):
    """Tiny RAM++ with CLIP distillation (plain data parallel; the image-caption alignment loss is left out: it pairs
    each rank's own images and captions, so it differs from one device's by design)."""
    from tests.st.test_run_mindformer_tagging import DEMO as RAM_DEMO, TINY as RAM_TINY

    settings = [o for o in RAM_TINY if not o.startswith(("runner_config", "eval_dataset"))] + [
        "eval_dataset=null", "tagging.alignment=false", "runner_config.max_steps=6", "runner_config.logging_steps=1",
        "runner_config.save_steps=6", "runner_config.num_workers=1", "lr_schedule.warmup_steps=0",
        "lr_schedule.total_steps=6"]
    one = run("--config", RAM_DEMO, "--output_dir", tmp_path / "one", "--options", *settings, per_rank_batch(1))
    assert one.returncode == 0, one.stderr[-3000:]
    logs = tmp_path / "logs"
    two = distributed(tmp_path / "two", log_dir=logs, config=RAM_DEMO, settings=settings)
    assert two.returncode == 0, two.stderr[-3000:] + "".join(p.read_text()[-2000:] for p in logs.glob("*.log"))
    difference = max_difference(tmp_path / "one" / "final" / "model.ckpt", tmp_path / "two" / "final" / "model.ckpt")
    print(f"RAM++: 2 ranks x {GLOBAL_BATCH // RANKS} vs 1 rank x {GLOBAL_BATCH}, 6 AdamW steps: max |param diff| "
          f"{difference:.3g}")
    assert difference <= TOLERANCE

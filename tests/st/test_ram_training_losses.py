"""RAM++ training on tiny configs: every loss part logged on its own and falling, the loss weights, evaluation during
training with ``best/`` kept across a resume. (Config errors: tests/unit/test_ram_training_options.py.)"""
import json
import logging

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from mindram.losses import TaggingWithLoss
from mindram.models.modeling_utils import read_checkpoint
from mindram.trainer import Trainer
from mindram.trainer.train_step import TrainStep
from mindram.utils.graph import run_in_graph_mode
from tests.unit.test_image_tagging_task import tiny_run_config

PARTS = ["loss_tag", "loss_dis", "loss_alignment"]


def read_log(output_dir):
    return [json.loads(line) for line in (output_dir / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_every_loss_part_is_logged_and_falls(tmp_path, caplog):
    """4 images memorised (batch 4, 90 updates, seeded): the tag, distillation and alignment losses each fall."""
    cfg = tiny_run_config(tmp_path, max_steps=90, logging_steps=3, batch_size=4)
    cfg.merge_from_dict({"tagging.layer_decay": None, "train_dataset.data_loader.num_samples": 4,
                         "lr_schedule.learning_rate": 5e-3})
    with caplog.at_level(logging.INFO, logger="mindram.trainer.tasks.base"):
        summary = Trainer(args=cfg).train()
    log = read_log(tmp_path)
    assert [r["step"] for r in log] == list(range(3, 91, 3)) and log == summary["history"]
    for record in log:   # the total is the sum of the parts (default weights), each averaged over the window
        assert record["loss"] == pytest.approx(sum(record[name] for name in PARTS), rel=1e-5)
    falls = {}
    for name in ["loss"] + PARTS:
        curve = [r[name] for r in log]
        falls[name] = (np.mean(curve[:3]), np.mean(curve[-3:]))
    print("mean of the first / last 3 logged values:", {k: (round(a, 4), round(b, 4)) for k, (a, b) in falls.items()})
    assert all(last < 0.6 * first for first, last in falls.values()), falls
    metrics = json.loads((tmp_path / "train_metrics.json").read_text())
    assert {f"final_{name}" for name in PARTS} <= set(metrics) and metrics["final_loss_tag"] == log[-1]["loss_tag"]
    assert "eval_history" not in metrics   # no evaluation configured
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("step 90 "))
    assert all(f"{name} " in line for name in PARTS), line


def tiny_network_inputs(trainer, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    text = rng.standard_normal((batch, 16)).astype(np.float32)
    labels = (rng.random((batch, trainer.model.config.num_tags)) < 0.3).astype(np.float32)
    return (ms.Tensor(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)), ms.Tensor(labels),
            ms.Tensor(rng.standard_normal((batch, 16)).astype(np.float32)),
            ms.Tensor(text / np.linalg.norm(text, axis=1, keepdims=True)))


class FixedCaptionLoss(nn.Cell):
    """A stand-in caption loss (mean square of the projected image tokens): checks how loss_t2t is combined."""

    def construct(self, image_embeds, *caption_inputs):
        return (image_embeds ** 2).mean() + 0.0 * caption_inputs[0].sum()


def test_weights_change_the_total_as_configured(tmp_path):
    trainer = Trainer(args=tiny_run_config(tmp_path))
    inputs = tiny_network_inputs(trainer)

    def losses(**kwargs):
        network = TaggingWithLoss(trainer.model, distillation=True, alignment=True, **kwargs)
        total, parts = network(*inputs, *kwargs.pop("caption_inputs", ()))
        return network.part_names, float(total.asnumpy()), parts.asnumpy()

    names, total, parts = losses()
    assert list(names) == PARTS and total == pytest.approx(parts.sum(), rel=1e-6)
    names, weighted, same = losses(weights={"tag": 2.0, "dis": 0.5, "alignment": 3.0})
    np.testing.assert_allclose(same, parts, rtol=1e-6)
    assert weighted == pytest.approx(2.0 * parts[0] + 0.5 * parts[1] + 3.0 * parts[2], rel=1e-5)
    # with a caption loss: w_t2t·t2t + w_tag·tag / sg(tag / t2t) (= w_tag·t2t in value) + dis + alignment
    caption = (ms.Tensor(np.zeros((4, 3), np.int32)),) * 5
    network = TaggingWithLoss(trainer.model, distillation=True, alignment=True, caption_loss=FixedCaptionLoss(),
                              weights={"tag": 3.0, "t2t": 2.0})
    total, parts = network(*inputs, *caption)
    parts = parts.asnumpy()
    assert list(network.part_names) == PARTS + ["loss_t2t"]
    assert float(total.asnumpy()) == pytest.approx(5.0 * parts[3] + parts[1] + parts[2], rel=1e-5)


class TotalOnly(nn.Cell):
    """The same network returning only its total (no ``part_names``): the gradients a step must take."""

    def __init__(self, network):
        super().__init__(auto_prefix=False)
        self.network = network

    def construct(self, *inputs):
        return self.network(*inputs)[0]


@pytest.mark.slow
def test_steps_differentiate_only_the_total(tmp_path):
    """A step on (total, parts) is the SGD update of the total's gradient alone (the parts get zero sensitivities,
    whatever the loss scale) and returns [total, *parts]. (AccumulateStep shares that code: the resume test below
    trains with accumulation.)"""
    trainer = Trainer(args=tiny_run_config(tmp_path))
    model, inputs = trainer.model, tiny_network_inputs(trainer)
    params = model.trainable_params()
    start = {p.name: p.asnumpy().copy() for p in params}
    network = TaggingWithLoss(model, distillation=True, alignment=True)
    total_only = TotalOnly(network)
    total = float(total_only(*inputs).asnumpy())
    grads = ms.grad(total_only, grad_position=None, weights=params)(*inputs)   # PyNative, the total alone
    step = TrainStep(network, nn.SGD(params, learning_rate=0.1), max_grad_norm=None, loss_scale=8.0)
    out = run_in_graph_mode(step, *inputs).asnumpy()
    assert out.shape == (4,) and out[0] == pytest.approx(total, rel=1e-5)
    assert out[0] == pytest.approx(out[1:].sum(), rel=1e-5)
    # the step's update against -lr·grad(total) (graph vs PyNative rounding: ~1e-3 of the update; had the parts
    # been differentiated too, the update would be about twice as large)
    for param, grad in zip(params, grads):
        update, expected = param.asnumpy() - start[param.name], -0.1 * grad.asnumpy()
        scale = float(np.abs(expected).max())
        assert float(np.abs(update - expected).max()) <= 2e-2 * scale + 1e-7, param.name
    assert max(float(np.abs(0.1 * g.asnumpy()).max()) for g in grads) > 1e-3   # the step did update


@pytest.mark.slow
def test_eval_steps_keep_the_best_model_across_a_resume(tmp_path):
    """Evaluation every 2 updates with a scripted metric (0.5, 0.9, 0.7, 0.8 at updates 2, 4, 6, 8) beside the real
    ones: best/ is update 4's model and stays so after resuming at update 4 (later evaluations are worse)."""
    out = tmp_path / "run"

    def trainer(max_steps, scripted, **runner):
        cfg = tiny_run_config(out, teacher=False, max_steps=max_steps, eval_steps=2, save_steps=2, batch_size=4,
                              gradient_accumulation_steps=2, keep_checkpoint_max=5, metric_for_best_model="scripted",
                              **runner)
        cfg.merge_from_dict({"lr_schedule.total_steps": 8, "eval_dataset.data_loader.num_samples": 12})
        made = Trainer(args=cfg)
        evaluate, values = made.task.evaluate, iter(scripted)
        made.task.eval_metric_names = lambda: None   # the scripted metric is only known once evaluated
        made.task.evaluate = lambda: {**evaluate(), "scripted": next(values)}
        return made

    trainer(4, [0.5, 0.9]).train()
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["best"]["step"] == 4 and state["best"]["value"] == 0.9
    summary = trainer(8, [0.7, 0.8], resume_from_checkpoint="latest").train()
    log = read_log(out)
    evals = [r for r in log if "eval_mAP" in r]
    assert [r["step"] for r in evals] == [2, 4, 6, 8] and [r["eval_scripted"] for r in evals] == [0.5, 0.9, 0.7, 0.8]
    assert all(0.0 <= r["eval_mAP"] <= 1.0 and r["eval_num_images"] == 12 for r in evals)
    best = json.loads((out / "best" / "best_metrics.json").read_text())
    assert best["step"] == summary["best"]["step"] == 4 and best["metric"] == "scripted" and best["value"] == 0.9
    assert best["metrics"]["mAP"] == evals[1]["eval_mAP"] and best["run_id"] == summary["run_id"]
    saved = read_checkpoint(out / "checkpoint-4" / "train_state.ckpt")
    kept = read_checkpoint(out / "best" / "model.ckpt")
    assert kept.keys() <= saved.keys() and all(np.array_equal(kept[k], saved[k]) for k in kept)
    final = read_checkpoint(out / "final" / "model.ckpt")
    assert any(not np.array_equal(kept[k], final[k]) for k in kept)   # best/ is not simply the last model
    reloaded = Trainer(task="image_tagging", model=out / "best", overrides={"output_dir": str(tmp_path / "o")})
    assert reloaded.model.config.num_tags == 19


# ----------------------------------------------------------------------------------------------- RAM caption loss
def caption_training_json(root, num_images=4):
    """A recognize-anything training json over SyntheticTags images: two captions per image, each with the tags
    parsed from it (``parse_label_id``); ``union_label_id`` the image's tags."""
    from PIL import Image
    from mindram.data.tagging import SYNTHETIC_TAGS, SyntheticTags
    source, entries = SyntheticTags(num_images, image_size=32), []
    for i in range(num_images):
        record = source[i]
        colour, shape = record.label[:2].tolist()
        Image.fromarray(record.image).save(root / f"{i}.jpg", quality=95)
        entries.append({"image_path": f"{i}.jpg", "union_label_id": record.label.tolist(),
                        "caption": [record.caption[0], f"a picture of a {SYNTHETIC_TAGS[shape]}"],
                        "parse_label_id": [[colour, shape], [shape]]})
    (root / "train.json").write_text(json.dumps(entries))
    return root / "train.json"


def caption_run_config(tmp_path, **runner):
    from tests.conftest import FIXTURES
    cfg = tiny_run_config(tmp_path / "out", teacher=False, batch_size=4, **runner)
    cfg.merge_from_dict({
        "model.arch.type": "RAM", "model.model_config.model_type": "ram",
        "model.model_config.descriptions_per_tag": 1, "model.model_config.caption_modules": True,
        "model.model_config.caption_config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                              "intermediate_size": 64, "vocab_size": 79,
                                              "max_position_embeddings": 64},
        "train_dataset.data_loader": {"type": "RAMTaggingJson", "root": str(tmp_path),
                                      "annotation_file": str(caption_training_json(tmp_path)), "num_tags": 19},
        "tagging.caption_loss": True, "tagging.caption_tokenizer": str(FIXTURES / "ram_caption" / "vocab.txt"),
        "tagging.layer_decay": None, "lr_schedule.learning_rate": 5e-3})
    return cfg


@pytest.mark.slow
def test_ram_trains_its_caption_loss(tmp_path):
    """RAM with caption modules on 4 images: loss_t2t on the drawn caption with its parsed tags, the tag loss
    rescaled to its magnitude (total = 2·loss_t2t in value with unit weights); both fall and the caption modules
    are trained."""
    trainer = Trainer(args=caption_run_config(tmp_path, max_steps=40, logging_steps=4))
    start = {k: v.copy() for k, v in trainer.model.state_dict().items() if k.startswith("text_decoder.")}
    summary = trainer.train()
    log = summary["history"]
    assert all(set(PARTS[:1] + ["loss_t2t"]) <= set(r) and "loss_dis" not in r for r in log)
    for record in log:
        assert record["loss"] == pytest.approx(2.0 * record["loss_t2t"], rel=1e-4)
    for name in ("loss_tag", "loss_t2t"):
        first, last = np.mean([r[name] for r in log[:2]]), np.mean([r[name] for r in log[-2:]])
        print(f"{name}: mean of the first / last 2 logged values {first:.4f} / {last:.4f}")
        assert last < 0.7 * first, (name, first, last)
    trained = trainer.model.state_dict()
    assert max(float(np.abs(trained[k] - v).max()) for k, v in start.items()) > 1e-3
    assert summary["final_loss_t2t"] == log[-1]["loss_t2t"]

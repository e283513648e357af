"""Run-config errors of the RAM training options, all raised before any training step: loss weights, evaluation
during training (eval_steps, evaluation_strategy, metric_for_best_model)."""
import numpy as np
import pytest

from mindram.errors import ConfigError
from mindram.trainer import Trainer
from mindram.trainer.tasks.tagging_options import TaggingOptions, check_loss_weights
from mindram.trainer.training_args import TrainingArguments
from tests.unit.test_image_tagging_task import tiny_run_config


def one_line(error):
    message = str(error.value)
    assert "\n" not in message, message
    return message


def test_loss_weights_defaults_and_errors():
    assert check_loss_weights(None) == {"tag": 1.0, "dis": 1.0, "alignment": 1.0, "t2t": 1.0}
    assert TaggingOptions.from_dict({"loss_weights": {"dis": 2}}).loss_weights["dis"] == 2.0
    with pytest.raises(ConfigError) as error:
        TaggingOptions.from_dict({"loss_weights": {"tags": 1.0}})
    assert "unknown loss term(s) ['tags']; allowed: ['alignment', 'dis', 't2t', 'tag']" in one_line(error)
    for bad in (-1.0, "x", True):
        with pytest.raises(ConfigError, match=r"loss_weights\.tag: expected a number >= 0"):
            check_loss_weights({"tag": bad})
    with pytest.raises(ConfigError, match="expected a mapping"):
        check_loss_weights([1, 2])


def test_loss_weights_error_names_the_section(tmp_path):
    cfg = tiny_run_config(tmp_path)
    cfg.merge_from_dict({"tagging.loss_weights": {"distillation": 1.0}})
    with pytest.raises(ConfigError) as error:
        Trainer(args=cfg)
    assert one_line(error).startswith("tagging: loss_weights: unknown loss term(s) ['distillation']")


def test_evaluation_settings_are_checked():
    assert TrainingArguments.from_dict({"eval_steps": 5}).evaluates == "steps"
    assert TrainingArguments.from_dict({"evaluation_strategy": "epoch"}).evaluates == "epoch"
    assert TrainingArguments.from_dict({"eval_steps": 5, "evaluation_strategy": "no"}).evaluates is None
    assert TrainingArguments.from_dict({}).evaluates is None
    args = TrainingArguments.from_dict({})
    assert args.best_is_greater("mAP") and not args.best_is_greater("eval_loss")
    assert not TrainingArguments.from_dict({"greater_is_better": False}).best_is_greater("mAP")
    with pytest.raises(ConfigError, match="evaluation_strategy: expected one of"):
        TrainingArguments.from_dict({"evaluation_strategy": "often"})
    with pytest.raises(ConfigError, match="'steps' needs runner_config.eval_steps"):
        TrainingArguments.from_dict({"evaluation_strategy": "steps"})
    with pytest.raises(ConfigError, match=r"eval_steps: expected >= 1"):
        TrainingArguments.from_dict({"eval_steps": 0})


def test_eval_steps_need_an_eval_dataset(tmp_path):
    cfg = tiny_run_config(tmp_path, eval_steps=2)
    cfg.eval_dataset = None
    with pytest.raises(ConfigError) as error:
        Trainer(args=cfg)
    message = one_line(error)
    assert "runner_config.eval_steps" in message and "eval_dataset" in message
    cfg = tiny_run_config(tmp_path, evaluation_strategy="epoch")
    cfg.eval_dataset = None
    with pytest.raises(ConfigError, match="runner_config.evaluation_strategy is set but there is no eval_dataset"):
        Trainer(args=cfg)


def test_unknown_best_metric_is_refused_before_training(tmp_path):
    trainer = Trainer(args=tiny_run_config(tmp_path / "out", eval_steps=2, metric_for_best_model="F1"))
    with pytest.raises(ConfigError) as error:
        trainer.train()
    assert one_line(error) == ("runner_config.metric_for_best_model: 'F1' is not a metric of task 'image_tagging'; "
                               "available: CF1, CP, CR, mAP, num_classes, num_images, num_skipped")
    assert not (tmp_path / "out").exists()   # refused before the run claimed its directory
    assert trainer.task.best_metric == "F1"
    assert Trainer(args=tiny_run_config(tmp_path / "o2", eval_steps=2)).task.best_metric == "mAP"


def scripted_evaluations(trainer, values, metric="CF1", greater=None):
    """Drive the trainer's evaluation-during-training with scripted metrics (no training): the best records."""
    task = trainer.task
    task.args.metric_for_best_model, task.args.greater_is_better = metric, greater
    scripted = iter(values)
    task.evaluate = lambda: {"CF1": next(scripted), "mAP": 0.25, "skipped": ["a.jpg"]}
    task.output_dir.mkdir(parents=True, exist_ok=True)
    state = {"global_step": 0, "epoch": 0, "eval_history": [], "best": None, "run_id": "r1"}
    bests = []
    for _ in values:
        state["global_step"] += 2
        task._evaluate_during_training(state)
        bests.append(state["best"]["step"] if state["best"] else None)
    return state, bests


def test_best_is_never_replaced_by_a_worse_or_non_finite_value(tmp_path):
    trainer = Trainer(args=tiny_run_config(tmp_path / "up", eval_steps=2))
    state, bests = scripted_evaluations(trainer, [0.5, 0.3, float("nan"), 0.7, 0.7])
    assert bests == [2, 2, 2, 8, 8] and state["best"]["value"] == 0.7
    assert [r["eval_CF1"] for r in state["eval_history"]][:2] == [0.5, 0.3]
    assert all(r["eval_mAP"] == 0.25 and "eval_skipped" not in r for r in state["eval_history"])
    best = (tmp_path / "up" / "best")
    assert (best / "config.yaml").is_file() and (best / "model.ckpt").is_file()
    assert '"step": 8' in (best / "best_metrics.json").read_text()
    logged = (tmp_path / "up" / "train_log.jsonl").read_text().splitlines()
    assert len(logged) == 5 and all(line.startswith('{"step": ') for line in logged)
    trainer = Trainer(args=tiny_run_config(tmp_path / "down", eval_steps=2))
    state, bests = scripted_evaluations(trainer, [0.5, 0.3, 0.7], greater=False)
    assert bests == [2, 4, 4] and state["best"]["greater_is_better"] is False
    assert not list((tmp_path / "down").glob(".checkpoint-*"))   # no temporaries left by the replacements


def test_a_metric_the_evaluation_lacks_is_refused_at_the_first_evaluation(tmp_path):
    trainer = Trainer(args=tiny_run_config(tmp_path, eval_steps=2))
    trainer.task.eval_metric_names = lambda: None   # as a task that cannot say before evaluating
    with pytest.raises(ConfigError) as error:
        scripted_evaluations(trainer, [0.5], metric="F1")
    assert one_line(error) == ("runner_config.metric_for_best_model: 'F1' is not a metric of task 'image_tagging'; "
                               "available: CF1, mAP")


def test_an_interrupted_best_replacement_is_undone(tmp_path):
    from mindram.trainer.checkpointing import previous_run_artefacts, read_best, remove_stale_temporaries
    old = tmp_path / ".checkpoint-old-best-1234abcd"   # renamed away, the new best not yet in place: killed
    old.mkdir()
    (old / "best_metrics.json").write_text('{"step": 4}')
    (tmp_path / ".checkpoint-best-5678abcd").mkdir()   # the new one, incomplete
    remove_stale_temporaries(tmp_path)
    assert read_best(tmp_path) == {"step": 4} and sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    assert [p.name for p in previous_run_artefacts(tmp_path)] == ["best"]


def test_caption_loss_needs_a_captioning_ram_and_parse_tags(tmp_path):
    from tests.st.test_ram_training_losses import caption_run_config
    cfg = tiny_run_config(tmp_path / "plus", teacher=False)
    cfg.merge_from_dict({"tagging.caption_loss": True})
    with pytest.raises(ConfigError) as error:
        Trainer(args=cfg).train()
    assert one_line(error).startswith("tagging.caption_loss: captioning needs RAM's caption modules; RAM++ has none")
    cfg = caption_run_config(tmp_path)
    cfg.merge_from_dict({"model.model_config.caption_modules": False})
    with pytest.raises(ConfigError, match="tagging.caption_loss: this RAM has no caption modules"):
        Trainer(args=cfg).train()
    cfg = caption_run_config(tmp_path)
    cfg.merge_from_dict({"train_dataset.data_loader": {"type": "SyntheticTags", "num_samples": 8, "image_size": 32}})
    with pytest.raises(ConfigError, match="SyntheticTags has no parse tags"):
        Trainer(args=cfg).train()
    cfg = caption_run_config(tmp_path)
    cfg.merge_from_dict({"tagging.caption_tokenizer": str(tmp_path / "missing_vocab.txt")})
    with pytest.raises(ConfigError, match="missing_vocab.txt"):
        Trainer(args=cfg).train()
    assert not (tmp_path / "out").exists() and not (tmp_path / "plus").exists()   # all before the run started


def test_caption_inputs_follow_the_drawn_caption(tmp_path):
    from mindram.data.tagging import SYNTHETIC_TAGS, RAMTaggingJson
    from mindram.data.teacher_features import pick_caption
    from mindram.errors import DataError
    from mindram.models.ram import BertTokenizer
    from mindram.trainer.caption_training import caption_inputs
    from tests.conftest import FIXTURES
    from tests.st.test_ram_training_losses import caption_training_json
    source = RAMTaggingJson(tmp_path, caption_training_json(tmp_path), num_tags=19)
    tokenizer = BertTokenizer.from_pretrained(FIXTURES / "ram_caption" / "vocab.txt")
    tag_ids, tag_mask, caption_ids, caption_mask, targets = (t.asnumpy() for t in caption_inputs(
        source, SYNTHETIC_TAGS, tokenizer, np.array([0, 3]), seed=5, epoch=2))
    assert tag_ids.shape == (2, 40) and caption_ids.shape == targets.shape == caption_mask.shape
    for row, index in enumerate([0, 3]):
        pick = pick_caption(2, 5, 2, index)
        tags = " | ".join(SYNTHETIC_TAGS[i] for i in source.parse_labels[index][pick])
        expected = tokenizer([tags], padding="max_length", max_length=40)["input_ids"][0]
        assert tag_ids[row, 0] == tokenizer.enc_token_id and tag_ids[row, 1:].tolist() == list(expected[1:])
        caption = tokenizer([source[index].caption[pick]], padding="max_length", max_length=40)["input_ids"][0]
        assert caption_ids[row, 0] == tokenizer.bos_token_id and caption_ids[row, 1:].tolist() == list(caption[1:])
    source.parse_labels[1] = None
    with pytest.raises(DataError, match="record 1: tagging.caption_loss needs parse_label_id"):
        caption_inputs(source, SYNTHETIC_TAGS, tokenizer, np.array([1]), seed=5, epoch=0)

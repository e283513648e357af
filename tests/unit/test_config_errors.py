"""Config-level errors as ConfigError naming the file/key: YAML syntax and encoding, base_config chains,
run_mode, output_dir, unknown registry names, predict top_k, sections that are not mappings, ``type``s that are
not names, and out-of-range optimizer / learning-rate schedule values."""
import pytest

from mindram import Trainer
from mindram.config import MindFormerConfig, parse_options, parse_scalar
from mindram.errors import ConfigError
from mindram.registry import MindFormerModuleType, MindFormerRegister, UnknownNameError
from mindram.trainer.optim import build_lr_schedule
from mindram.trainer.run_config import check_output_dir, load_run_config, validate_run_config
from tests.conftest import ROOT

DEMO = ROOT / "configs" / "clip" / "run_clip_demo_synthetic.yaml"


def write(path, data):
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = write(tmp_path / "bad.yaml", "a: 1\nb: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        MindFormerConfig(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:3:1: invalid YAML: expected ',' or ']'")
    assert "while parsing a flow sequence started at line 2" in message and "\n" not in message


def test_non_utf8_config_names_the_file_and_byte(tmp_path):
    path = write(tmp_path / "latin1.yaml", b"a: \xe9\n")
    with pytest.raises(ConfigError, match=r"latin1.yaml: not UTF-8 text \(byte 0xe9 at offset 3\); save the file"):
        MindFormerConfig(str(path))


def test_base_config_cycle_names_the_chain(tmp_path):
    for name, base in (("a", "b"), ("b", "c"), ("c", "b")):
        write(tmp_path / f"{name}.yaml", f"base_config: {base}.yaml\n")
    with pytest.raises(ConfigError) as info:
        MindFormerConfig(str(tmp_path / "a.yaml"))
    chain = " -> ".join(str(tmp_path / f"{name}.yaml") for name in "abcb")
    assert str(info.value).startswith(f"base_config cycle: {chain};")


def test_missing_base_file_names_the_chain_that_included_it(tmp_path):
    write(tmp_path / "top.yaml", "base_config: mid.yaml\n")
    write(tmp_path / "mid.yaml", "base_config: [nowhere.yaml]\n")
    with pytest.raises(ConfigError) as info:
        MindFormerConfig(str(tmp_path / "top.yaml"))
    assert "base_config file not found: nowhere.yaml" in str(info.value)
    assert f"included via {tmp_path / 'top.yaml'} -> {tmp_path / 'mid.yaml'}" in str(info.value)


@pytest.mark.parametrize("mode", ["bogus", "trian"])
def test_run_mode_is_validated(mode):
    config = MindFormerConfig(str(DEMO))
    config.run_mode = mode
    with pytest.raises(ConfigError, match=f"run_mode: unknown mode '{mode}'; allowed: train, eval, predict, finetune"):
        validate_run_config(config)
    config.run_mode = "eval"
    validate_run_config(config)


def test_output_dir_under_a_file_is_refused(tmp_path):
    blocker = write(tmp_path / "file", "x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        check_output_dir(blocker)
    with pytest.raises(ConfigError, match=f"cannot be created: {blocker} is a file"):
        check_output_dir(blocker / "a" / "b")
    check_output_dir(tmp_path / "new" / "run")


def test_unknown_registry_name_is_a_config_error_and_a_key_error():
    with pytest.raises(UnknownNameError) as info:
        MindFormerRegister.get_cls(MindFormerModuleType.OPTIMIZER, "AdamWeightDecy")
    assert isinstance(info.value, ConfigError) and isinstance(info.value, KeyError)
    assert str(info.value).startswith("'AdamWeightDecy' is not a registered optimizer; closest: ['AdamWeightDecay'")


@pytest.mark.parametrize("top_k", [0, -1, True, 2.5])
def test_predict_top_k_must_be_a_positive_int(top_k):
    trainer = Trainer(args=str(DEMO))
    with pytest.raises(ConfigError, match=rf"predict top_k .*: expected None or a positive int, got {top_k!r}"):
        trainer.predict([], top_k=top_k)
    assert trainer.task._model is None  # refused before the model is built


def test_exponent_numbers_are_floats_in_files_and_options(tmp_path):
    """PyYAML (YAML 1.1) reads ``1e-3`` as the string '1e-3'; a learning rate written that way must be a float."""
    path = write(tmp_path / "lr.yaml", "optimizer:\n  learning_rate: 1e-3\n  eps: 1.0e-8\n  beta: 5E2\nname: 1e\n")
    config = MindFormerConfig(str(path))
    assert config.optimizer.learning_rate == 1e-3 and isinstance(config.optimizer.learning_rate, float)
    assert config.optimizer.eps == 1e-8 and config.optimizer.beta == 500.0 and config.name == "1e"
    assert [parse_scalar(t) for t in ("1e30", "-2.5e-3", "3", "true", "null", "[1, 2]", "cat")] == \
        [1e30, -2.5e-3, 3, True, None, [1, 2], "cat"]


def hostile_run_config(tmp_path, text):
    """A run YAML that inherits the demo config and sets ``text`` over it (as a user's file would)."""
    return write(tmp_path / "hostile.yaml", f"base_config: {DEMO}\n{text}")


@pytest.mark.parametrize("text,message", [
    ("optimizer: 3\n", r"^optimizer: expected a mapping, got 3$"),
    ("lr_schedule: [1]\n", r"^lr_schedule: expected a mapping, got \[1\]$"),
    ("model: {model_config: false}\n", r"^model.model_config: expected a mapping, got False$"),
    ("model: {arch: cat}\n", r"^model.arch: expected a mapping, got 'cat'$"),
    ("trainer: 3\n", r"^trainer: expected a mapping, got 3$"),
    ("runner_config: 5\n", r"^runner_config: expected a mapping, got 5$"),
    ("train_dataset: [a, b]\n", r"^train_dataset: expected a mapping, got \['a', 'b'\]$"),
    ("optimizer: {type: [AdamW]}\n", r"^optimizer.type: expected a registered name \(a string\), got \['AdamW'\]$"),
    ("lr_schedule: {type: {a: 1}}\n", r"^lr_schedule.type: expected a registered name \(a string\), got \{'a': 1\}$"),
    ("trainer: {type: [x]}\n", r"^trainer.type: expected a registered name \(a string\), got \['x'\]$"),
    ("model: {arch: {type: [CLIPModel]}}\n", r"^model.arch.type: expected a registered name \(a string\)"),
    ("train_dataset: {data_loader: {type: [SyntheticCaptions]}}\n",
     r"^train_dataset.data_loader.type: expected a registered name \(a string\)"),
    ("1: one\nbogus: two\n", r"^run config: unknown key\(s\) \[1, 'bogus'\]"),
])
def test_hostile_sections_are_config_errors_naming_the_key(tmp_path, text, message):
    path = hostile_run_config(tmp_path, text)
    with pytest.raises(ConfigError, match=message):
        Trainer(args=str(path))
    with pytest.raises(ConfigError, match=message):
        validate_run_config(load_run_config(str(path)))


def test_a_section_broken_by_an_override_is_refused_by_the_loader():
    with pytest.raises(ConfigError, match=r"^context: expected a mapping, got 3$"):
        load_run_config(str(DEMO), parse_options(["context=3"]))
    with pytest.raises(ConfigError, match=r"^optimizer: expected a mapping, got 'fast'$"):
        Trainer(args=str(DEMO), overrides=parse_options(["optimizer=fast"]))


@pytest.mark.parametrize("option,message", [
    ("lr_schedule.warmup_steps=.nan", r"^lr_schedule.warmup_steps: expected an int >= 0, got nan$"),
    ("lr_schedule.warmup_steps=2.5", r"^lr_schedule.warmup_steps: expected an int >= 0, got 2.5$"),
    ("lr_schedule.warmup_steps=true", r"^lr_schedule.warmup_steps: expected an int >= 0, got True$"),
    ("lr_schedule.total_steps=0", r"^lr_schedule.total_steps: expected an int >= 1, got 0$"),
    ("lr_schedule.learning_rate=.inf", r"^lr_schedule.learning_rate: expected a finite number > 0, got inf$"),
    ("lr_schedule.learning_rate=-1", r"^lr_schedule.learning_rate: expected a finite number > 0, got -1$"),
    ("lr_schedule.learning_rate=fast", r"^lr_schedule.learning_rate: expected a finite number > 0, got 'fast'$"),
    ("lr_schedule.min_lr=.nan", r"^lr_schedule.min_lr: expected a finite number >= 0, got nan$"),
    ("lr_schedule.warmup_ratio=1.5", r"^lr_schedule.warmup_ratio: expected a number in \[0, 1\], got 1.5$"),
    ("optimizer.beta1=1.5", r"^optimizer.beta1: expected a number in \(0, 1\), got 1.5$"),
    ("optimizer.beta2=0", r"^optimizer.beta2: expected a number in \(0, 1\), got 0$"),
    ("optimizer.eps=0", r"^optimizer.eps: expected a finite number > 0, got 0$"),
    ("optimizer.weight_decay=.nan", r"^optimizer.weight_decay: expected a finite number >= 0, got nan$"),
    ("optimizer.weight_decay=[0.1]", r"^optimizer.weight_decay: expected a finite number >= 0, got \[0.1\]$"),
])
def test_schedule_and_optimizer_values_are_checked_before_training(option, message):
    with pytest.raises(ConfigError, match=message):
        Trainer(args=str(DEMO), overrides=parse_options([option]))


def test_schedule_builder_refuses_what_validation_refuses():
    with pytest.raises(ConfigError, match=r"^lr_schedule.warmup_steps: expected an int >= 0, got nan$"):
        build_lr_schedule({"type": "CosineWithWarmUpLR", "learning_rate": 1e-3, "warmup_steps": float("nan")}, 10)
    with pytest.raises(ConfigError, match=r"^lr_schedule.learning_rate: required"):
        build_lr_schedule({"type": "ConstantWithWarmUpLR", "warmup_steps": 2}, 10)
    schedule = build_lr_schedule({"type": "CosineWithWarmUpLR", "learning_rate": 1e-3, "warmup_ratio": 0.2}, 10)
    assert schedule.warmup_steps == 2 and schedule.value(1) == pytest.approx(1e-3)


def test_sections_without_a_type_validate_with_the_builders_defaults():
    config = load_run_config(str(DEMO))
    config.optimizer = MindFormerConfig({"weight_decay": 0.05})
    config.lr_schedule = MindFormerConfig({"learning_rate": 1e-4})
    validate_run_config(config)
    config.lr_schedule = MindFormerConfig({"warmup_steps": 3})
    with pytest.raises(ConfigError, match=r"^lr_schedule.learning_rate: required"):
        validate_run_config(config)

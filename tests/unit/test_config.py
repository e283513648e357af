"""MindFormerConfig inheritance/overrides, registry look-ups and run-config validation errors."""
import pytest

from mindram.config import MindFormerConfig
from mindram.errors import ConfigError
from mindram.registry import MindFormerModuleType, MindFormerRegister, build_from_cfg
from mindram.trainer.run_config import validate_run_config
from tests.conftest import ROOT

CONFIGS = ROOT / "configs" / "clip"


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_base_config_inheritance_and_dotted_overrides(tmp_path):
    write(tmp_path / "base.yaml", "a: 1\nsection: {x: 1, y: [1, 2]}\n")
    write(tmp_path / "mid.yaml", "base_config: base.yaml\nsection: {x: 2}\n")
    cfg = MindFormerConfig(str(write(tmp_path / "top.yaml", "base_config: [mid.yaml]\nb: 3\n")))
    assert cfg.to_dict() == {"a": 1, "b": 3, "section": {"x": 2, "y": [1, 2]}}
    assert cfg.section.x == 2 and cfg.missing is None
    cfg.merge_from_dict({"section.x": 5, "new.deep.key": "v"})
    assert cfg.section.x == 5 and cfg.new.deep.key == "v"


def test_missing_base_file_names_it(tmp_path):
    path = write(tmp_path / "top.yaml", "base_config: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="base_config file not found: nowhere.yaml"):
        MindFormerConfig(str(path))


def test_base_config_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", "base_config: b.yaml\n")
    write(tmp_path / "b.yaml", "base_config: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        MindFormerConfig(str(tmp_path / "a.yaml"))


def test_registry_unknown_name_lists_closest():
    with pytest.raises(KeyError, match="CLIPModel"):
        MindFormerRegister.get_cls(MindFormerModuleType.MODELS, "ClipModel")
    assert "CosineWithWarmUpLR" in MindFormerRegister.names(MindFormerModuleType.LR)


def test_build_from_cfg_rejects_unknown_argument():
    with pytest.raises(ConfigError, match=r"unknown argument\(s\) \['warmup'\]"):
        build_from_cfg({"type": "CosineWithWarmUpLR", "learning_rate": 1e-3, "total_steps": 10, "warmup": 3})
    schedule = build_from_cfg({"type": "CosineWithWarmUpLR", "learning_rate": 1e-3, "total_steps": 10,
                               "warmup_steps": 2}, MindFormerModuleType.LR)
    assert schedule.value(0) == pytest.approx(5e-4) and schedule.value(9) < 1e-4


def demo():
    return MindFormerConfig(str(CONFIGS / "run_clip_demo_synthetic.yaml"))


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("run_*.yaml")), ids=lambda p: p.name)
def test_every_shipped_run_config_validates(path):
    cfg = MindFormerConfig(str(path))
    for section in ("train_dataset", "eval_dataset"):  # dataset dirs are given on the command line
        if cfg.get(section) is not None and cfg[section].data_loader.get("dataset_dir") == "":
            cfg[section].data_loader.dataset_dir = str(path.parent)
        if cfg.get(section) is not None and cfg[section].data_loader.get("annotation_file", 0) is None:
            cfg[section].data_loader.annotation_file = str(path)
    validate_run_config(cfg)


@pytest.mark.parametrize("override,message", [
    ({"runer_config": {}}, r"run config: unknown key\(s\) \['runer_config'\]"),
    ({"runner_config.batch_sise": 4}, r"unknown key\(s\) \['batch_sise'\]"),
    ({"runner_config.batch_size": "64"}, r"batch_size: expected int, got '64'"),
    ({"runner_config.epochs": 0}, r"runner_config.epochs: expected >= 1"),
    ({"model.model_config.projection_dim": 1.5}, r"projection_dim: expected int, got 1.5"),
    ({"model.model_config.vision_config.hidden_act": "swish"}, r"unknown activation 'swish'"),
    ({"train_dataset.data_loader.type": "Flickr9k"}, r"'Flickr9k' is not a registered dataset"),
    ({"train_dataset.data_loader.num_sample": 3}, r"unknown argument\(s\) \['num_sample'\] for SyntheticCaptions"),
    ({"eval_dataset.data_loader.dataset_dir": "/no/such/dir"}, r"dataset_dir: path does not exist: /no/such/dir"),
    ({"optimizer.type": "Adam2"}, r"'Adam2' is not a registered optimizer"),
    ({"optimizer.weight_decay_rate": 0.1}, r"optimizer: unknown argument\(s\) \['weight_decay_rate'\]"),
    ({"lr_schedule.warmup": 3}, r"lr_schedule: unknown argument\(s\) \['warmup'\]"),
    ({"zero_shot.template": "a {}"}, r"zero_shot: unknown key\(s\) \['template'\]"),
])
def test_run_config_errors_name_the_key(override, message):
    cfg = demo()
    cfg.merge_from_dict(override)
    with pytest.raises((ConfigError, KeyError), match=message):
        validate_run_config(cfg)

"""PaddleClas RAM users: their YAML translated into a mindram run config (every key mapped or listed, the printed
YAML reading back as the same config, run_mindformer.py taking the PaddleClas file directly), and PaddleClas'
prediction output shape ({class_ids, scores, label_names}, en|cn) from the pipeline and run_mindformer.py."""
import importlib.util
import json
import logging

import numpy as np
import pytest
import yaml
from PIL import Image

import mindram
from mindram.catalog import CONFIG_ROOT
from mindram.compat import paddleclas
from mindram.config import read_yaml
from mindram.errors import ConfigError
from mindram.models.ram.convert import convert_state_dict
from mindram.trainer.run_config import load_run_config, validate_run_config
from mindram.trainer.tasks.tagging_options import PACKAGE_ROOT
from tests.conftest import FIXTURES, ROOT
from tests.fixtures.ram.loader import fixture_config, reference_state_dict

FIXTURE = FIXTURES / "paddleclas" / "RAM_plus.yaml"
ANNOTATIONS = [{"image_path": "images/a.jpg", "caption": ["a dog on the grass"], "union_label_id": [5, 9],
                "parse_label_id": [[5, 9]]}]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory holding the annotation files the fixture names (PaddleClas paths are cwd-relative)."""
    (tmp_path / "data").mkdir()
    for name in ("coco_ram.json", "vg_ram.json"):
        (tmp_path / "data" / name).write_text(json.dumps(ANNOTATIONS), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_key_is_mapped_or_listed():
    data = read_yaml(FIXTURE)
    config, unhonoured = paddleclas.translate(data)
    model = config["model"]["model_config"]
    assert config["model"]["arch"]["type"] == "RAMPlus" and config["trainer"]["model_name"] == "ram_plus_swin_l_384"
    assert (model["threshold"], model["delete_tag_index"], model["vit"]) == (0.7, [3, 17], "swin_l")
    assert (model["tag_list"], model["tag_list_chinese"], model["threshold_file"]) == (
        "ram_tag_list.txt", "ram_tag_list_chinese.txt", "ram_tag_list_threshold.txt")  # the package's copies
    assert config["tagging"] == {"teacher": "clip_vit_b_16", "layer_decay": 0.75, "output_format": "paddleclas",
                                 "language": "cn"}
    assert config["optimizer"] == {"type": "AdamWeightDecay", "beta1": 0.9, "beta2": 0.98, "eps": 1e-8,
                                   "weight_decay": 0.05}
    assert config["lr_schedule"] == {"type": "CosineWithWarmUpLR", "learning_rate": 0.0002, "min_lr": 1e-6,
                                     "warmup_ratio": 0.1}  # warmup_epoch 2 of 20 epochs
    assert config["runner_config"] == {"epochs": 20, "logging_steps": 25, "batch_size": 24, "eval_batch_size": 16,
                                       "train_transform": False}
    assert config["train_dataset"]["data_loader"]["annotation_file"] == "./data/coco_ram.json"
    assert config["eval_dataset"]["data_loader"] == {"type": "RAMTaggingJson", "dataset_dir": ".",
                                                     "annotation_file": "./data/vg_ram.json", "num_tags": 4585}
    assert config["processor"]["image_processor"] == {"type": "RAMImageProcessor", "interpolation": "bicubic",
                                                      "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert config["context"] == {"device_target": "GPU"} and "load_checkpoint" not in config
    # what cannot be honoured is listed, with the second annotation file, the AMP section, the Paddle weights
    for key in ("AMP", "DataLoader.Train.dataset.ann_file", "Global.pretrained_model", "Arch.clip_pretraind",
                "Infer.transforms", "Infer.infer_imgs", "Optimizer.lr.warmup_start_lr", "Loss.Eval"):
        assert key in unhonoured, key
    assert "vg_ram.json" in unhonoured["DataLoader.Train.dataset.ann_file"]
    # nothing dropped silently: an unknown key is listed too
    data["Optimizer"]["no_weight_decay_name"] = "pos_embed"
    data["Shiny"] = {"x": 1}
    _, unhonoured = paddleclas.translate(data)
    assert "unknown key" in unhonoured["Optimizer.no_weight_decay_name"] and "Shiny" in unhonoured


def test_translated_yaml_round_trips_and_validates(workdir, capsys, caplog):
    out = workdir / "run_ram_plus.yaml"
    assert paddleclas.main([str(FIXTURE), "-o", str(out)]) == 0
    stderr = capsys.readouterr().err
    config, unhonoured = paddleclas.translate_file(FIXTURE)
    assert stderr.count("not honoured: ") == len(unhonoured) > 5
    text = out.read_text(encoding="utf-8")
    assert all(f"#   {key}: " in text for key in unhonoured)
    assert yaml.safe_load(text) == config                                  # the printed YAML is the translation
    assert load_run_config(str(out)).to_dict() == config                    # ... and loads as a mindram run config
    with caplog.at_level(logging.WARNING):
        direct = load_run_config(str(FIXTURE))                             # the PaddleClas file itself
    assert direct.to_dict() == config and "Global.pretrained_model not honoured" in caplog.text
    args = validate_run_config(direct, default_arch="RAMPlus")
    assert (args.epochs, args.batch_size, args.output_dir) == (20, 24, "./output_ram_plus/")
    with pytest.raises(ConfigError, match="Arch.name"):
        paddleclas.translate({"Global": {}, "Arch": {"name": "tag2text"}})


@pytest.fixture(scope="module")
def tagger():
    config = fixture_config("ram_plus", caption_modules=False)
    model = mindram.RAMPlus(config)
    model.load_weights(convert_state_dict(reference_state_dict("ram_plus"), config)[0])
    model.set_train(False)
    return mindram.pipeline("image_tagging", model=model)


def image(path, seed):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (80, 100, 3), dtype=np.uint8)).save(path)
    return str(path)


@pytest.mark.slow
def test_pipeline_gives_paddleclas_output_shape(tagger, tmp_path):
    images = [image(tmp_path / "a.png", 1), str(tmp_path / "missing.png"), image(tmp_path / "b.png", 2)]
    listed = tagger(images)
    out = tagger(images, output_format="paddleclas")          # PaddleClas' default language: cn
    assert set(out) == {"class_ids", "scores", "label_names"}
    assert out["class_ids"][1] is None and out["scores"][1] is None and out["label_names"][1] is None
    for tags, ids, scores, names in zip(listed, out["class_ids"], out["scores"], out["label_names"]):
        if tags is None:
            continue
        by_id = sorted(tags, key=lambda t: t["class_id"])
        assert ids == [[t["class_id"]] for t in by_id] and ids == sorted(ids) and ids
        assert scores == [[t["score"]] for t in by_id]
        assert names == " | ".join(t["label_cn"] for t in by_id)
    english = tagger(images, output_format="paddleclas", language="en")  # same batch shape: no new compile
    assert english["label_names"][0] == " | ".join(t["label"] for t in sorted(listed[0], key=lambda t: t["class_id"]))
    with pytest.raises(ConfigError, match="language"):
        tagger(images[:1], language="en")
    with pytest.raises(ConfigError, match="output_format"):
        tagger(images[:1], output_format="xml")


def load_run_mindformer():
    spec = importlib.util.spec_from_file_location("run_mindformer_cli", ROOT / "run_mindformer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_run_mindformer_predict_prints_paddleclas_shape(tmp_path, capsys):
    demo = read_yaml(CONFIG_ROOT / "ram" / "run_ram_demo_synthetic.yaml")["model"]["model_config"]
    demo.pop("type")
    for key in ("tag_list", "tag_list_chinese", "threshold_file"):
        demo[key] = str(PACKAGE_ROOT / demo[key])
    mindram.RAMPlus(mindram.RAMConfig.from_dict(demo)).save_pretrained(tmp_path / "tiny")
    cli = load_run_mindformer()
    argv = ["--config", str(CONFIG_ROOT / "ram" / "run_ram_demo_synthetic.yaml"), "--run_mode", "predict",
            "--load_checkpoint", str(tmp_path / "tiny"), "--predict_data", image(tmp_path / "a.png", 3),
            str(tmp_path / "missing.png"), "--output_format", "paddleclas", "--language", "en",
            "--options", "tagging.threshold=0.0", f"output_dir={tmp_path / 'out'}"]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"class_ids", "scores", "label_names"} and printed["class_ids"][1] is None
    assert printed["class_ids"][0] == [[k] for k in range(19)]             # threshold 0: every tag, index order
    names = (PACKAGE_ROOT / demo["tag_list"]).read_text(encoding="utf-8").splitlines()
    assert printed["label_names"][0] == " | ".join(names)
    clip = ["--config", str(CONFIG_ROOT / "clip" / "run_clip_demo_synthetic.yaml"), "--run_mode", "predict",
            "--predict_data", "x.png", "--output_format", "paddleclas", "--output_dir", str(tmp_path / "clip")]
    with pytest.raises(ConfigError, match="only the image_tagging task"):
        cli.main(clip)

"""Which weights a run starts from: every run logs them first (file + sha256, or random init), a config that means
pretrained weights fails clearly without them, and weights that declare their architecture (catalog record,
``<stem>.yaml``) are never run as another one (followed with a warning, or refused when the shapes differ)."""
import hashlib
import logging
import re

import numpy as np
import pytest
import yaml
from PIL import Image

import mindram
from mindram import CLIPConfig, CLIPModel, Trainer, catalog
from mindram.config import MindFormerConfig
from mindram.errors import CheckpointError
from mindram.models.modeling_utils import write_checkpoint
from tests.conftest import ROOT
from tests.st.test_run_mindformer import last_json, run
from tests.unit.data_fixtures import make_flickr8k

CONFIGS = sorted((ROOT / "configs").glob("*/run_*.yaml"))
CLAIMED = re.compile(r"\$MINDRAM_HOME/(\w+)/([\w.@-]+\.(?:ckpt|safetensors))")
CIFAR = ROOT / "configs" / "clip" / "run_clip_vit_b_32_zero_shot_image_classification_cifar100.yaml"
FLICKR = ROOT / "configs" / "clip" / "run_clip_vit_b_32_pretrain_flickr8k.yaml"
LAION_ALIAS = "paddlemix/CLIP/CLIP-ViT-B-32-laion2B-s34B-b79K"


def tiny_config(act, width=32):
    return CLIPConfig.from_dict({
        "projection_dim": 16,
        "vision_config": {"image_size": 32, "patch_size": 8, "hidden_size": width, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "intermediate_size": 64, "hidden_act": act},
        "text_config": {"vocab_size": 49408, "max_position_embeddings": 16, "hidden_size": 32,
                        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "hidden_act": act}})


def zero_shot_run_config(act, load, output_dir):
    """A QuickGELU (``act``) zero-shot run config of the tiny architecture, starting from ``load``."""
    return {"output_dir": str(output_dir), "load_checkpoint": load,
            "trainer": {"type": "ZeroShotImageClassificationTrainer"},
            "model": {"arch": {"type": "CLIPModel"}, "model_config": tiny_config(act).to_dict()},
            "predict": {"candidate_labels": ["red", "green", "blue"]}}


def save_with_sidecar(model, path):
    """``path`` and ``<stem>.yaml``, as the converters write them."""
    write_checkpoint(model.state_dict(), path)
    model.config.save(path.with_suffix(".yaml"))
    return path


def pixels():
    return np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)


@pytest.fixture
def gelu_model():
    np.random.seed(0)
    return CLIPModel(tiny_config("gelu"))


def leading_comment(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines[:next(i for i, l in enumerate(lines) if not l.startswith("#"))])


# ------------------------------------------------------------------ 1. configs start from what they say
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_shipped_config_starts_from_the_weights_its_comment_names(path, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("MINDRAM_HOME", str(home))
    monkeypatch.setenv("MINDRAM_OFFLINE", "1")
    config = MindFormerConfig(str(path))
    load = config.get("load_checkpoint")
    comment = leading_comment(path)
    claimed = CLAIMED.findall(comment)
    if not load:
        assert not claimed, f"{path.name}: loads nothing, yet its comment names {claimed}"
        assert Trainer(args=path).task.start_weights() is None
        return
    assert "load_checkpoint: null" not in comment, f"{path.name}: its comment says random init, it loads {load}"
    family = path.parent.name
    expected = catalog.resolve(family, load).checkpoint_path
    for fam, file in claimed:   # the checkpoint its comment names is the one it loads
        assert home / fam / file == expected, f"{path.name}: comment names {fam}/{file}, loads {expected}"
    with pytest.raises(CheckpointError) as missing:   # absent, offline: the expected path and the convert command
        Trainer(args=path).task.start_weights()
    message = " ".join(str(missing.value).split())
    assert str(expected) in message and f"convert_weights/convert_{family}.py" in message
    expected.parent.mkdir(parents=True)
    expected.write_bytes(b"placeholder")   # resolution looks the file up; nothing reads it here
    assert Trainer(args=path).task.start_weights().file == expected


def test_the_flickr8k_config_starts_from_openai_weights_and_stops_without_them(tmp_path):
    """The command of the config's comment, offline with nothing converted: one line naming the expected file and
    the convert command, before the output_dir is created (it used to train from random weights, silently)."""
    make_flickr8k(tmp_path / "Flickr8k")
    result = run("--config", FLICKR, "--run_mode", "train", "--train_dataset_dir", "./Flickr8k",
                 "--output_dir", "./out", cwd=tmp_path,
                 env={"MINDRAM_HOME": str(tmp_path / "home"), "MINDRAM_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = [l for l in result.stderr.splitlines() if "error:" in l]
    assert str(tmp_path / "home" / "clip" / "clip_vit_b_32.ckpt") in line
    assert "python convert_weights/convert_clip.py" in line and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_random_init_is_logged(tmp_path, caplog):
    cfg = zero_shot_run_config("gelu", None, tmp_path)
    caplog.set_level(logging.INFO)
    Trainer(args=cfg).task.model  # pylint: disable=expression-not-assigned
    assert "start weights: random init (load_checkpoint is not set)" in caplog.text


# ------------------------------------------------------------------ 2. the weights' architecture runs
def test_gelu_weights_run_as_gelu_through_a_quickgelu_run_config(tmp_path, gelu_model, caplog):
    ckpt = save_with_sidecar(gelu_model, tmp_path / "gelu.ckpt")
    caplog.set_level(logging.INFO)
    model = Trainer(args=zero_shot_run_config("quick_gelu", str(ckpt), tmp_path / "out")).task.model
    assert model.config.vision_config.hidden_act == model.config.text_config.hidden_act == "gelu"
    expected = gelu_model.get_image_features(pixels()).asnumpy()
    np.testing.assert_allclose(model.get_image_features(pixels()).asnumpy(), expected, rtol=1e-5, atol=1e-6)
    quick = CLIPModel(tiny_config("quick_gelu"))
    quick.load_weights(str(ckpt))
    assert np.abs(quick.get_image_features(pixels()).asnumpy() - expected).max() > 1e-4  # the activation matters
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"the weights declare their own architecture ({ckpt.with_suffix('.yaml')})" in warning
    assert "vision_config.hidden_act 'quick_gelu' (weights: 'gelu')" in warning and "running them as" in warning
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    starts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("start weights:")]
    assert starts == [f"start weights: {ckpt} (sha256 {sha}, {ckpt.with_suffix('.yaml')})"]


def test_weights_of_other_shapes_are_refused_naming_both(tmp_path):
    np.random.seed(1)
    wide = save_with_sidecar(CLIPModel(tiny_config("gelu", width=64)), tmp_path / "wide.ckpt")
    trainer = Trainer(args=zero_shot_run_config("quick_gelu", str(wide), tmp_path / "out"))
    with pytest.raises(CheckpointError) as refused:
        trainer.task.model  # pylint: disable=expression-not-assigned
    message = str(refused.value)
    assert "\n" not in message and str(wide.with_suffix(".yaml")) in message
    assert "visual.conv1.weight: run config (32, 3, 8, 8) vs weights (64, 3, 8, 8)" in message
    assert "remove model.model_config" in message


def test_cli_from_a_relative_path_follows_the_weights_and_logs_them_first(tmp_path, gelu_model):
    """run_mindformer.py from the checkpoint's folder with relative paths: a QuickGELU run config predicts with the
    GELU weights' scores, after logging the file and its sha256."""
    ckpt = save_with_sidecar(gelu_model, tmp_path / "gelu.ckpt")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(zero_shot_run_config("quick_gelu", None, "./out")))
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "i.png")
    result = run("--config", "run.yaml", "--run_mode", "predict", "--predict_data", "i.png", "--top_k", "3",
                 "--load_checkpoint", "gelu.ckpt", cwd=tmp_path, env={"MINDRAM_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    logged = [l for l in result.stderr.splitlines() if "start weights:" in l or "running them as" in l]
    assert len(logged) == 2 and "running them as" in logged[1]   # the weights first, then their architecture
    assert logged[0].endswith(f"start weights: gelu.ckpt (sha256 {sha}, gelu.yaml)")
    expected = mindram.pipeline("zero_shot_image_classification", model=gelu_model,
                                candidate_labels=["red", "green", "blue"])(str(tmp_path / "i.png"))
    got = {r["label"]: r["score"] for r in last_json(result.stdout)[0]}
    assert got == pytest.approx({r["label"]: r["score"] for r in expected[0]}, abs=1e-5)


# ------------------------------------------------------------------ catalog weights through an evaluation config
TINY_ARCH = """aliases: [{alias}]
model:
  arch: {{type: CLIPModel}}
  model_config:
    type: CLIPConfig
    projection_dim: 16
    vision_config: {{image_size: 32, patch_size: 8, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2,
                    intermediate_size: 64, hidden_act: {act}}}
    text_config: {{vocab_size: 49408, max_position_embeddings: 16, hidden_size: 32, num_hidden_layers: 1,
                  num_attention_heads: 2, intermediate_size: 64, hidden_act: {act}}}
"""


@pytest.fixture
def tiny_catalog(tmp_path, monkeypatch):
    """The ViT-B/32 and ViT-L/14 architectures made tiny through ``$MINDRAM_CATALOG`` (GELU and QuickGELU)."""
    folder = tmp_path / "catalog" / "clip" / "model"
    folder.mkdir(parents=True)
    for arch, alias in (("clip_vit_b_32", "ViT-B-32"), ("clip_vit_l_14", "ViT-L-14")):
        (folder / f"{arch}.yaml").write_text(TINY_ARCH.format(alias=alias, act="gelu"), encoding="utf-8")
        (folder / f"{arch}_quickgelu.yaml").write_text(TINY_ARCH.format(alias=f"{alias}-quickgelu", act="quick_gelu"),
                                                       encoding="utf-8")
    monkeypatch.setenv("MINDRAM_CATALOG", str(tmp_path / "catalog"))
    monkeypatch.setenv("MINDRAM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MINDRAM_OFFLINE", "1")
    return tmp_path / "home" / "clip"


def test_an_evaluation_config_runs_any_catalog_weights_as_their_architecture(tiny_catalog, tmp_path, gelu_model,
                                                                            caplog):
    for name in ("clip_vit_b_32.laion2b_s34b_b79k", "clip_vit_l_14.laion2b_s32b_b82k"):
        target = catalog.resolve("clip", name).checkpoint_path
        target.parent.mkdir(parents=True, exist_ok=True)
        write_checkpoint(gelu_model.state_dict(), target)
    overrides = {"load_checkpoint": LAION_ALIAS, "output_dir": str(tmp_path / "out")}
    task = Trainer(args=CIFAR, overrides=overrides).task
    assert task.model.config.vision_config.hidden_act == "gelu"
    assert task.model.config.checkpoint_name_or_path == "clip_vit_b_32.laion2b_s34b_b79k"
    np.testing.assert_allclose(task.model.get_image_features(pixels()).asnumpy(),
                               gelu_model.get_image_features(pixels()).asnumpy(), rtol=1e-5, atol=1e-6)
    # a run config that pins the QuickGELU architecture: the weights still run as GELU, the warning names both
    model = Trainer(args=zero_shot_run_config("quick_gelu", LAION_ALIAS, tmp_path / "out")).task.model
    assert model.config.vision_config.hidden_act == "gelu"
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "the weights declare architecture clip_vit_b_32 (catalog record clip_vit_b_32.laion2b_s34b_b79k)" in warning
    assert "model.model_config is architecture clip_vit_b_32_quickgelu" in warning
    assert warning.endswith("running them as declared (clip_vit_b_32)")
    # the weights' preprocessing too: the laion ViT-L/14 weights use mean = std = 0.5 (configs/clip/pretrained.yaml)
    task = Trainer(args=CIFAR, overrides={**overrides, "load_checkpoint": "clip_vit_l_14.laion2b_s32b_b82k"}).task
    assert tuple(task.image_processor().mean) == tuple(task.image_processor().std) == (0.5, 0.5, 0.5)


TINY_RAM = """model:
  arch: {{type: RAM}}
  model_config:
    type: RAMConfig
    model_type: ram
    image_size: 32
    vision_config: {{image_size: 32, patch_size: 4, embed_dim: 16, depths: [1, 1], num_heads: [1, 2], window_size: 4,
                    drop_path_rate: 0.0}}
    head_config: {{hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}}
    num_tags: 19
    label_embed_dim: 16
    descriptions_per_tag: 1
    tag_list: {tags}/synthetic_tag_list.txt
    tag_list_chinese: {tags}/synthetic_tag_list_chinese.txt
    threshold_file: {tags}/synthetic_tag_list_threshold.txt
"""


def test_the_ram_plus_evaluation_config_runs_ram_weights_as_ram(tmp_path, monkeypatch):
    """The RAM++ evaluation config with --load_checkpoint ram_swin_l_384: a RAM model, not RAM++ (the weights'
    architecture; ram_swin_l_384 made tiny through $MINDRAM_CATALOG)."""
    from mindram.models.ram import RAM, RAMConfig  # pylint: disable=import-outside-toplevel
    folder = tmp_path / "catalog" / "ram" / "model"
    folder.mkdir(parents=True)
    (folder / "ram_swin_l_384.yaml").write_text(TINY_RAM.format(tags=ROOT / "mindram" / "data" / "synthetic_tags"))
    monkeypatch.setenv("MINDRAM_CATALOG", str(tmp_path / "catalog"))
    monkeypatch.setenv("MINDRAM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MINDRAM_OFFLINE", "1")
    np.random.seed(0)
    ram = RAM(RAMConfig.from_pretrained("ram_swin_l_384"))
    target = catalog.resolve("ram", "ram_swin_l_384").checkpoint_path
    target.parent.mkdir(parents=True)
    write_checkpoint(ram.state_dict(), target)
    config = ROOT / "configs" / "ram" / "run_ram_plus_swin_l_384_eval_openimages_common.yaml"
    model = Trainer(args=config, overrides={"load_checkpoint": "ram_swin_l_384",
                                            "output_dir": str(tmp_path / "out")}).task.model
    assert type(model) is RAM and model.config.num_tags == 19
    loaded, saved = model.state_dict(), ram.state_dict()
    assert loaded.keys() == saved.keys() and all(np.array_equal(loaded[k], saved[k]) for k in saved)

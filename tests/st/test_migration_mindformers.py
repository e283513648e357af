"""MindFormers CLIP users' snippets and commands (its README, docs/migrating.md), written as they wrote them
with only the import changed, on random weights in the place of the converted ones."""
import functools
import http.server
import json
import threading

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

import mindram
from mindram import Trainer, pipeline
from mindram.errors import ConfigError, DataError
from mindram.models.modeling_utils import write_checkpoint
from mindram.tools.image_tools import load_image
from tests.conftest import ROOT
from tests.st.test_run_mindformer import TINY, last_json, run
from tests.unit.data_fixtures import make_cifar100, make_flickr8k

CIFAR_CONFIG = ROOT / "configs" / "clip" / "run_clip_vit_b_32_zero_shot_image_classification_cifar100.yaml"
FLICKR_CONFIG = ROOT / "configs" / "clip" / "run_clip_vit_b_32_pretrain_flickr8k.yaml"
LABELS = ["sunflower", "tree", "dog", "cat", "toy"]
TINY_ARCH = """base_config: {base}
aliases: ['ViT-B-32-quickgelu']
model:
  model_config:
    projection_dim: 16
    vision_config: {{image_size: 32, patch_size: 8, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2,
                    intermediate_size: 128}}
    text_config: {{hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 128}}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A loopback HTTP server over a folder holding ``sunflower.png``; yields its base URL."""
    folder = tmp_path_factory.mktemp("www")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(folder / "sunflower.png")
    (folder / "not_an_image.png").write_text("hello")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def graph_mode():
    """MindFormers' snippets start with ``mindspore.set_context(mode=0)``: restore the mode afterwards."""
    before = ms.get_context("mode")
    yield
    ms.set_context(mode=before)


@pytest.fixture
def tiny_clip_vit_b_32(tmp_path, monkeypatch):
    """``clip_vit_b_32`` made tiny through ``$MINDRAM_CATALOG`` (its architecture file overridden), with random
    weights at ``$MINDRAM_HOME/clip/clip_vit_b_32.ckpt``: the names the snippets use resolve as they would
    with the real converted weights."""
    catalog_dir = tmp_path / "catalog" / "clip" / "model"
    catalog_dir.mkdir(parents=True)
    base = ROOT / "mindram" / "configs" / "clip" / "model" / "clip_vit_b_32_quickgelu.yaml"
    (catalog_dir / "clip_vit_b_32_quickgelu.yaml").write_text(TINY_ARCH.format(base=base), encoding="utf-8")
    monkeypatch.setenv("MINDRAM_CATALOG", str(tmp_path / "catalog"))
    monkeypatch.setenv("MINDRAM_HOME", str(tmp_path / "home"))
    config = mindram.CLIPConfig.from_pretrained("clip_vit_b_32")
    assert config.vision_config.hidden_size == 32 and config.vision_config.hidden_act == "quick_gelu"
    (tmp_path / "home" / "clip").mkdir(parents=True)
    np.random.seed(0)
    model = mindram.CLIPModel(config)
    write_checkpoint(model.state_dict(), tmp_path / "home" / "clip" / "clip_vit_b_32.ckpt")
    return model


def test_show_support_list_prints_mindformers_block_and_names_ignore_case(capsys):
    names = mindram.CLIPModel.show_support_list()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "- support list of CLIPModel is:"
    assert out[1].startswith("-    [") and "'clip_vit_b_32'" in out[1] and out[2].startswith("- ---")
    assert {"clip_vit_b_32", "clip_vit_b_16", "clip_vit_l_14", "clip_vit_l_14@336"} <= set(names)
    # MindFormers prints 'clip_vit_B_16' in its own support list
    assert mindram.CLIPConfig.from_pretrained("clip_vit_B_16") == mindram.CLIPConfig.from_pretrained("clip_vit_b_16")
    assert mindram.CLIPConfig.from_pretrained("clip_vit_B_16").vision_config.patch_size == 16


def test_architecture_and_weights_names_are_unambiguous():
    gelu = mindram.CLIPConfig.from_pretrained("ViT-B-32")  # open_clip: always the GELU architecture
    openai = mindram.CLIPConfig.from_pretrained("clip_vit_b_32")  # MindFormers: OpenAI's weights, QuickGELU
    assert gelu.vision_config.hidden_act == "gelu" and openai.vision_config.hidden_act == "quick_gelu"
    arch = mindram.catalog.resolve("clip", "ViT-B-32")
    assert arch.tag is None and arch.file != mindram.catalog.resolve("clip", "clip_vit_b_32").file
    pair = mindram.catalog.resolve("clip", "ViT-B-32.laion2b_s34b_b79k")  # open_clip's (arch, pretrained)
    assert pair.name == "clip_vit_b_32.laion2b_s34b_b79k" and pair.arch == "clip_vit_b_32"
    assert mindram.catalog.resolve("clip", "ViT-B-32.openai").arch == "clip_vit_b_32_quickgelu"
    with pytest.raises(KeyError, match="laion2b_s34b_b79k"):
        mindram.catalog.resolve("clip", "ViT-B-32.no_such_tag")


def test_mindformers_config_fields_change_the_network():
    printed = {"text_config": {"hidden_size": 512, "vocab_size": 49408, "max_position_embeddings": 77,
                               "num_hidden_layers": 12},
               "vision_config": {"hidden_size": 768, "image_size": 224, "patch_size": 32, "num_hidden_layers": 12},
               "projection_dim": 512, "ratio": 64, "checkpoint_name_or_path": "clip_vit_b_32", "dtype": "float16"}
    config = mindram.CLIPConfig.from_dict(printed)
    assert config.compute_dtype == config.dtype == "float16"
    assert (config.vision_config.num_attention_heads, config.text_config.num_attention_heads, config.ratio) == (12, 8, 64)
    assert mindram.CLIPConfig.from_dict({**printed, "ratio": 32}).vision_config.num_attention_heads == 24
    with pytest.raises(ConfigError, match="contradicts"):
        mindram.CLIPConfig.from_dict({**printed, "compute_dtype": "float32"})
    with pytest.raises(ConfigError, match="num_attention_heads"):
        mindram.CLIPConfig.from_dict({**printed, "vision_config": {**printed["vision_config"], "num_attention_heads": 8}})
    # dtype is the compute dtype of the network, as in MindFormers
    small = {"projection_dim": 16, "ratio": 16,
             "vision_config": {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 1},
             "text_config": {"hidden_size": 32, "num_hidden_layers": 1, "intermediate_size": 64}}
    np.random.seed(0)
    fp32 = mindram.CLIPModel(mindram.CLIPConfig.from_dict(small))
    fp16 = mindram.CLIPModel(mindram.CLIPConfig.from_dict({**small, "dtype": "float16"}))
    fp16.load_weights(fp32.state_dict())
    pixels = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    a, b = fp32.get_image_features(pixels).asnumpy(), fp16.get_image_features(pixels).asnumpy()
    assert 0 < np.abs(a - b).max() < 5e-2 * np.abs(a).max()


def test_load_image_reads_urls_paths_and_arrays(served, tmp_path):
    image = load_image(f"{served}/sunflower.png")
    assert image.mode == "RGB" and image.size == (40, 48)
    image.save(tmp_path / "local.png")
    np.testing.assert_array_equal(np.asarray(load_image(str(tmp_path / "local.png"))), np.asarray(image))
    np.testing.assert_array_equal(np.asarray(load_image(np.asarray(image))), np.asarray(image))
    with pytest.raises(DataError, match="HTTP 404"):
        load_image(f"{served}/missing.png")
    with pytest.raises(DataError, match="not a readable image"):
        load_image(f"{served}/not_an_image.png")
    with pytest.raises(DataError, match="offline"):
        load_image("http://127.0.0.1:9/closed.png", timeout=2)


@pytest.mark.slow
def test_mindformers_pipeline_snippet(tiny_clip_vit_b_32, served, graph_mode):
    import mindspore; mindspore.set_context(mode=0)  # noqa: E702 (the snippet's first line, device_id aside)
    classifier = pipeline("zero_shot_image_classification", model="clip_vit_b_32", candidate_labels=LABELS)
    img = load_image(f"{served}/sunflower.png")
    result = classifier(img)
    assert len(result) == 1 and sorted(r["label"] for r in result[0]) == sorted(LABELS)
    assert abs(sum(r["score"] for r in result[0]) - 1) < 1e-5
    # a URL is accepted wherever a path is; in a list, a bad URL is skipped and reported, not fatal
    by_url = classifier([f"{served}/sunflower.png", f"{served}/missing.png"])
    assert by_url[1] is None
    assert [r["label"] for r in by_url[0]] == [r["label"] for r in result[0]]
    np.testing.assert_allclose([r["score"] for r in by_url[0]], [r["score"] for r in result[0]], atol=1e-6)


@pytest.mark.slow
def test_mindformers_trainer_snippet(tiny_clip_vit_b_32, served, tmp_path, monkeypatch, graph_mode):
    import mindspore; mindspore.set_context(mode=0)  # noqa: E702 (the snippet's first line, device_id aside)
    monkeypatch.chdir(tmp_path)
    make_cifar100(tmp_path, n_train=2, n_test=4)
    trainer = Trainer(task='zero_shot_image_classification',
                      model='clip_vit_b_32',
                      eval_dataset='./cifar-100-python')
    img = load_image(f"{served}/sunflower.png")
    # way 1: evaluate and predict with the trained/default weights
    metrics = trainer.evaluate(eval_checkpoint=True)
    predict_result = trainer.predict(predict_checkpoint=True, input_data=img, top_k=3)
    assert metrics["num_images"] == 4 and metrics["num_classes"] == 100 and metrics["num_templates"] == 18
    assert len(predict_result) == 1 and len(predict_result[0]) == 3
    # way 2: without the argument
    assert trainer.evaluate()["zero_shot_top1"] == metrics["zero_shot_top1"]
    assert trainer.predict(input_data=img, top_k=3) == predict_result
    # a path: that checkpoint (here the same weights saved elsewhere)
    tiny_clip_vit_b_32.save_pretrained(tmp_path / "saved")
    assert trainer.evaluate(eval_checkpoint=str(tmp_path / "saved"))["zero_shot_top1"] == metrics["zero_shot_top1"]
    # MindFormers' distributed-checkpoint arguments: accepted unset, refused set, with the reason
    assert trainer.predict(input_data=img, top_k=1, auto_trans_ckpt=False)[0][0] == predict_result[0][0]
    with pytest.raises(ConfigError, match="not supported"):
        trainer.evaluate(auto_trans_ckpt=True)
    with pytest.raises(TypeError, match="no_such_argument"):
        trainer.evaluate(no_such_argument=1)
    # the 1,800 prompts of the 18-template evaluation are encoded once: the classifier is cached on disk
    assert len(list((tmp_path / "home" / "clip" / "zero_shot").glob("*.npy"))) == 1


@pytest.mark.slow
def test_mindformers_predict_command_needs_only_class_names(tmp_path):
    """`--run_mode predict --predict_data IMG` on the CIFAR-100 config, no --eval_dataset_dir: CIFAR-100's
    class names come with mindram (or the meta file, or --candidate_labels); no image of the dataset is read."""
    home = tmp_path / "home"
    (home / "clip").mkdir(parents=True)
    np.random.seed(0)
    model = mindram.CLIPModel(mindram.CLIPConfig.from_pretrained("clip_vit_b_32"))  # full size, random weights
    write_checkpoint(model.state_dict(), home / "clip" / "clip_vit_b_32.ckpt")
    del model
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "i.png")
    env = {"MINDRAM_HOME": str(home)}
    result = run("--config", CIFAR_CONFIG, "--run_mode", "predict", "--predict_data", tmp_path / "i.png",
                 cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (ranked,) = last_json(result.stdout)
    official = mindram.data.Cifar100.read_class_names()
    assert len(ranked) == 5 and all(r["label"] in official for r in ranked)
    assert "maple tree" in official and len(official) == 100

    chosen = run("--config", CIFAR_CONFIG, "--run_mode", "predict", "--predict_data", tmp_path / "i.png",
                 "--candidate_labels", "sunflower", "tree", cwd=tmp_path, env=env)
    assert chosen.returncode == 0, chosen.stderr[-3000:]
    assert sorted(r["label"] for r in last_json(chosen.stdout)[0]) == ["sunflower", "tree"]


def test_cifar100_class_names_come_from_the_meta_file_when_given(tmp_path):
    make_cifar100(tmp_path)
    names = mindram.data.Cifar100.read_class_names(tmp_path)
    assert names[:3] == ["maple tree", "apple", "aquarium fish"] and len(names) == 100


@pytest.mark.slow
def test_mindformers_pretrain_command_skips_the_unconfigured_evaluation(tmp_path):
    """MindFormers' pretrain command: the config's eval_dataset has no dataset_dir, so the evaluation after
    training is skipped and reported, not a failure."""
    make_flickr8k(tmp_path / "Flickr8k")
    tiny = [o for o in TINY if not o.startswith(("train_dataset", "eval_dataset"))]
    result = run("--config", FLICKR_CONFIG, "--run_mode", "train", "--train_dataset_dir", tmp_path / "Flickr8k",
                 "--options", *tiny, "runner_config.batch_size=2", "runner_config.max_steps=2",
                 "runner_config.train_transform=false", "load_checkpoint=null", cwd=tmp_path)  # tiny: random init
    assert result.returncode == 0, result.stderr[-3000:]
    summary = last_json(result.stdout)
    assert summary["global_step"] == 2 and "eval" not in summary
    assert "--eval_dataset_dir" in summary["eval_skipped"]
    assert "evaluation after training skipped" in result.stderr


def test_context_section_is_applied():
    import run_mindformer
    before = ms.get_context("mode")
    try:
        config = mindram.config.MindFormerConfig({"context": {"mode": 1, "device_target": "CPU", "device_id": 0}})
        assert run_mindformer.apply_context(config) == {"device_target": "CPU", "mode": 1, "device_id": 0}
        assert ms.get_context("mode") == ms.PYNATIVE_MODE
        run_mindformer.apply_context(mindram.config.MindFormerConfig({"context": {"mode": "GRAPH_MODE"}}))
        assert ms.get_context("mode") == ms.GRAPH_MODE
        with pytest.raises(ConfigError, match="context.mode"):
            run_mindformer.apply_context(mindram.config.MindFormerConfig({"context": {"mode": 3}}))
        if "Ascend" not in run_mindformer.supported_device_targets():
            with pytest.raises(ConfigError, match="context.device_target"):
                run_mindformer.apply_context(mindram.config.MindFormerConfig({"context": {"device_target": "Ascend"}}))
    finally:
        ms.set_context(mode=before)


def test_json_of_mindformers_cifar_predict_is_the_pipeline_shape(tiny_clip_vit_b_32):
    """``Trainer.predict`` returns MindFormers' shape: one list of {score, label} per image, best first."""
    del tiny_clip_vit_b_32
    trainer = Trainer(task="zero_shot_image_classification", model="clip_vit_b_32",
                      overrides={"predict": {"candidate_labels": LABELS}})
    image = np.random.default_rng(2).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    (ranked,) = trainer.predict(input_data=[image], top_k=2)
    assert [set(r) for r in ranked] == [{"score", "label"}] * 2 and ranked[0]["score"] >= ranked[1]["score"]
    json.dumps(ranked)


def test_sharded_checkpoint_flags_are_refused_with_the_reason():
    from tests.st.test_run_mindformer import DEMO
    result = run("--config", DEMO, "--run_mode", "eval", "--auto_trans_ckpt", "True")
    assert result.returncode == 2
    assert "auto_trans_ckpt=True: automatic transformation of sharded" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(ConfigError, match="src_strategy_path_or_dir"):
        Trainer(args=DEMO, overrides={"src_strategy_path_or_dir": "./strategy"})

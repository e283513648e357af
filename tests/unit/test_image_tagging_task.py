"""Task image_tagging on tiny configs: the tagging sources and pipeline, training (tag + distillation + RAM++
alignment losses, layer-wise lr decay), exact resume, evaluation metrics and predict output."""
import json

import numpy as np
import pytest
from PIL import Image

from mindram.config import MindFormerConfig
from mindram.data import DATASETS, SyntheticCaptions, build_tagging_dataset
from mindram.data.tagging import (SYNTHETIC_TAG_DIR, SYNTHETIC_TAGS, SYNTHETIC_TAGS_CHINESE, RAMTaggingJson,
                                  SyntheticTags, TaggingAnnotations, pre_caption, tagging_columns)
from mindram.errors import ConfigError, DataError
from mindram.models.clip import CLIPConfig, CLIPImageProcessor, CLIPModel, tokenize
from mindram.models.ram import RAMImageProcessor
from mindram.trainer import Trainer
from mindram.models.ram import RAM, RAMPlus
from mindram.trainer.run_config import SECTION_KEYS, validate_run_config
from mindram.models.swin import swin_layer_id
from mindram.trainer.tasks.image_tagging import ImageTaggingTrainer
from mindram.trainer.tasks.tagging_options import TaggingOptions
from tests.conftest import ROOT
from tests.unit.test_ram_trust import model_state

DEMO = ROOT / "configs" / "ram" / "run_ram_demo_synthetic.yaml"
TEACHER = {"projection_dim": 16,
           "vision_config": {"image_size": 16, "patch_size": 8, "hidden_size": 16, "num_hidden_layers": 1,
                             "num_attention_heads": 1, "intermediate_size": 32, "hidden_act": "gelu"},
           "text_config": {"vocab_size": 49408, "max_position_embeddings": 8, "hidden_size": 16,
                           "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 32,
                           "hidden_act": "gelu"}}


def tiny_run_config(output_dir, teacher=True, **runner):
    """The demo run config shrunk: 32 px Swin (embed 16, depths 1-1), 32-wide head, 16-d label embeddings."""
    cfg = MindFormerConfig(str(DEMO))
    cfg.merge_from_dict({
        "output_dir": str(output_dir),
        "model.model_config.image_size": 32,
        "model.model_config.vision_config": {"image_size": 32, "patch_size": 4, "embed_dim": 16, "depths": [1, 1],
                                             "num_heads": [1, 2], "window_size": 4, "drop_path_rate": 0.0},
        "model.model_config.head_config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                           "intermediate_size": 64},
        "model.model_config.label_embed_dim": 16,
        "model.model_config.descriptions_per_tag": 2,
        "train_dataset.data_loader": {"type": "SyntheticTags", "num_samples": 48, "image_size": 32},
        "eval_dataset.data_loader": {"type": "SyntheticTags", "num_samples": 24, "image_size": 32, "split": "test"},
        "tagging.teacher": TEACHER if teacher else None,
        "tagging.layer_decay": 0.8,
        "runner_config": {"batch_size": 8, "eval_batch_size": 12, "max_steps": 6, "logging_steps": 1,
                          "save_steps": None, "keep_checkpoint_max": 2, "num_workers": 1, "train_transform": False,
                          **runner},
        "lr_schedule": {"type": "CosineWithWarmUpLR", "learning_rate": 2e-3, "warmup_steps": 2},
    })
    return cfg


def write_jpeg(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95)
    return path


# ----------------------------------------------------------------------------------------------- sources
def test_ram_json_parser(tmp_path):
    entries = [{"image_path": "a.jpg", "caption": ["A Dog (running)!  on   grass.", "two dogs"],
                "union_label_id": [5, 1, 5], "parse_label_id": [[1], [5]]},
               {"image_path": "sub/b.jpg", "caption": "a cat", "union_label_id": []}]
    (tmp_path / "train.json").write_text(json.dumps(entries))
    source = RAMTaggingJson(tmp_path, tmp_path / "train.json", num_tags=10)
    assert len(source) == 2 and source.num_tags == 10 and source.tag_names is None
    record = source[0]
    assert record.image == str(tmp_path / "a.jpg") and record.caption == ["a dog running on grass", "two dogs"]
    assert record.label.tolist() == [1, 5] and source.parse_labels[0][1].tolist() == [5]
    assert source[1].caption == ["a cat"] and source[1].label.size == 0 and source.parse_labels[1] is None
    assert pre_caption(" ".join(["w"] * 40)) == " ".join(["w"] * 30)
    (tmp_path / "bad.json").write_text(json.dumps([{"image_path": "a.jpg", "caption": ["x"]}]))
    with pytest.raises(DataError, match="union_label_id"):
        RAMTaggingJson(tmp_path, tmp_path / "bad.json", num_tags=10)
    (tmp_path / "range.json").write_text(json.dumps([{"image_path": "a.jpg", "union_label_id": [10]}]))
    with pytest.raises(DataError, match="out of range"):
        RAMTaggingJson(tmp_path, tmp_path / "range.json", num_tags=10)


def make_openimages_folder(root, corrupt=True):
    """Reference layout: <root>/x_ram_annots.txt, x_ram_taglist.txt, imgs/test/<id>.jpg; tags from the synthetic
    vocabulary (in another order than the model's); image 'test/i2' is corrupt."""
    taglist = ["circle", "red", "blue", "square", "left"]
    synth = SyntheticTags(6, image_size=32, split="test")
    lines = []
    for i in range(6):
        record = synth[i]
        names = [SYNTHETIC_TAGS[k] for k in record.label if SYNTHETIC_TAGS[k] in taglist]
        lines.append(",".join([f"test/i{i}"] + names))
        write_jpeg(root / "imgs" / "test" / f"i{i}.jpg", record.image)
    if corrupt:
        (root / "imgs" / "test" / "i2.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (root / "x_ram_annots.txt").write_text("\n".join(lines))
    (root / "x_ram_taglist.txt").write_text("\n".join(taglist))
    return taglist, lines


def test_tagging_annotations_both_formats(tmp_path):
    taglist, lines = make_openimages_folder(tmp_path / "oi")
    source = TaggingAnnotations(tmp_path / "oi")
    assert source.tag_names == taglist and len(source) == 6 and source.num_tags == 5
    assert source[0].image == str(tmp_path / "oi" / "imgs" / "test" / "i0.jpg")
    first = lines[0].split(",")[1:]
    assert [taglist[k] for k in source[0].label] == sorted(first, key=taglist.index)
    # index format (ImageNet-multi / HICO): names keep their extension, 0-based indices after one comma
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "in_taglist.txt").write_text("missile\ncat\nmissile")
    (tmp_path / "in" / "in_annots.txt").write_text("v_1.JPEG,0 1\nv_2.JPEG\nv_3.JPEG,2")
    index = TaggingAnnotations(tmp_path / "in", image_dir=tmp_path / "imagenet")
    assert [r.label.tolist() for r in index] == [[0, 1], [], [2]]
    assert index[0].image == str(tmp_path / "imagenet" / "v_1.JPEG")
    with pytest.raises(DataError, match="no annotation file"):
        TaggingAnnotations(tmp_path)


def test_synthetic_tags_follow_synthetic_captions():
    tags, captions = SyntheticTags(40, image_size=32, seed=3), SyntheticCaptions(40, image_size=32, seed=3)
    assert tags.num_tags == 19 == len(SYNTHETIC_TAGS_CHINESE)
    for i in range(40):
        record, reference = tags[i], captions[i]
        assert np.array_equal(record.image, reference.image) and record.caption == [reference.caption]
        colour, shape, size, position = (SYNTHETIC_TAGS[k] for k in record.label)
        assert reference.caption.count(colour) and reference.caption.count(shape)
        assert reference.label == captions.colours.index(colour) * 4 + captions.shapes.index(shape)
        if "small" in reference.caption or "large" in reference.caption:
            assert size in reference.caption
        for word in ("left", "right", "top", "bottom", "center"):
            if word in reference.caption:
                assert position == word
    files = {p.name: p.read_text(encoding="utf-8").splitlines() for p in SYNTHETIC_TAG_DIR.iterdir()}
    assert files["synthetic_tag_list.txt"] == SYNTHETIC_TAGS
    assert files["synthetic_tag_list_chinese.txt"] == SYNTHETIC_TAGS_CHINESE
    assert {"ram_tagging_json", "tagging_annotations", "synthetic_tags"} <= set(DATASETS)


# ----------------------------------------------------------------------------------------------- pipeline
def test_pipeline_columns_resume_and_bad_images(tmp_path):
    source = SyntheticTags(20, image_size=32)
    kwargs = dict(batch_size=4, num_workers=1, seed=1, teacher_processor=CLIPImageProcessor(16),
                  tokenizer_fn=tokenize, context_length=8, train_transform=True, horizontal_flip=True)
    data = build_tagging_dataset(source, RAMImageProcessor(32), **kwargs)
    assert data.get_col_names() == tagging_columns(True, True) == ["pixel_values", "labels", "teacher_pixel_values",
                                                                   "input_ids"]
    batches = [{k: v.copy() for k, v in b.items()} for b in data.create_dict_iterator(num_epochs=1, output_numpy=True)]
    first = batches[0]
    assert first["pixel_values"].shape == (4, 3, 32, 32) and first["teacher_pixel_values"].shape == (4, 3, 16, 16)
    assert first["labels"].dtype == np.float32 and first["labels"].shape == (4, 19)
    assert (first["labels"].sum(1) == 4).all() and first["input_ids"].shape == (4, 8)
    resumed = build_tagging_dataset(source, RAMImageProcessor(32), start_step=3, **kwargs)
    tail = list(resumed.create_dict_iterator(num_epochs=1, output_numpy=True))
    assert len(tail) == 2 and all(np.array_equal(tail[i][k], batches[3 + i][k]) for i in range(2) for k in tail[0])
    # an unreadable image is skipped (substituted, counted) and evaluation sees each readable image once
    make_openimages_folder(tmp_path)
    annotated = TaggingAnnotations(tmp_path)
    rows = list(build_tagging_dataset(annotated, RAMImageProcessor(32), batch_size=4, shuffle=False,
                                      drop_remainder=False, num_workers=1, return_index=True)
                .create_dict_iterator(num_epochs=1, output_numpy=True))
    indices = np.concatenate([r["index"] for r in rows])
    assert len(indices) == 6 and sorted(set(indices.tolist())) == [0, 1, 3, 4, 5]
    assert annotated.stats.num_bad == 1 and 2 in annotated.bad_items


# ----------------------------------------------------------------------------------------------- options
def test_tagging_options_and_layer_ids():
    assert set(TaggingOptions.field_names()) == SECTION_KEYS["tagging"]
    options = TaggingOptions.from_dict({"tag_loss": {"gamma_neg": 2}})
    assert options.tag_loss == {"gamma_neg": 2, "gamma_pos": 0.0, "clip": 0.05} and options.train_scale == [0.2, 1.0]
    with pytest.raises(ConfigError, match="layer_decay"):
        TaggingOptions.from_dict({"layer_decay": 1.5})
    with pytest.raises(ConfigError, match="tag_loss"):
        TaggingOptions.from_dict({"tag_loss": {"gamma": 1}})
    depths = [2, 2, 18, 2]  # Swin-L: L = 26 layer ids
    assert swin_layer_id("patch_embed.proj.weight", depths) == 0
    assert swin_layer_id("layers.0.blocks.1.attn.qkv.weight", depths) == 2
    assert swin_layer_id("layers.0.downsample.reduction.weight", depths) == 2
    assert swin_layer_id("layers.2.blocks.0.norm1.weight", depths) == 5
    assert swin_layer_id("layers.3.blocks.1.mlp.c_fc.bias", depths) == 24
    assert swin_layer_id("norm.weight", depths) == 25


def test_layer_decay_param_groups_take_any_layer_id_rule():
    from types import SimpleNamespace
    from mindram.trainer.optim import param_groups_layer_decay
    shapes = {"a.weight": (2, 2), "a.bias": (2,), "b.weight": (2, 2)}
    params = [SimpleNamespace(name=name, shape=shape) for name, shape in shapes.items()]
    groups = param_groups_layer_decay(params, lambda name: 0 if name.startswith("a.") else 2, 3, 0.5, weight_decay=0.1)
    assert [([p.name for p in g["params"]], g["weight_decay"], g["lr_scale"]) for g in groups] == [
        (["a.bias"], 0.0, 0.25), (["a.weight"], 0.1, 0.25), (["b.weight"], 0.1, 1.0)]


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "ram").glob("run_*.yaml")), ids=lambda p: p.name)
def test_every_shipped_tagging_run_config_validates(path):
    cfg = MindFormerConfig(str(path))
    validate_run_config(cfg)  # dataset folders/files are given on the command line ("" is not checked)
    TaggingOptions.from_dict(cfg.get("tagging", MindFormerConfig()).to_dict())
    assert cfg.trainer.type == "ImageTaggingTrainer"


def test_default_task_config_and_model_class(tmp_path):
    trainer = Trainer(task="image_tagging")  # run_ram_plus_swin_l_384_finetune.yaml; nothing is built yet
    assert trainer.task.tagging.teacher == "clip_vit_b_16" and trainer.config.load_checkpoint == "ram_plus_swin_l_384"
    assert ImageTaggingTrainer.model_class("ram_swin_l_384") is RAM
    assert ImageTaggingTrainer.model_class("ram_plus_swin_b_384") is RAMPlus


def test_config_errors_before_work(tmp_path):
    cfg = tiny_run_config(tmp_path)
    cfg.merge_from_dict({"tagging.teachr": "clip_vit_b_16"})
    with pytest.raises(ConfigError, match="teachr"):
        Trainer(args=cfg)
    cfg = tiny_run_config(tmp_path)
    cfg.merge_from_dict({"tagging.teacher.projection_dim": 8})
    with pytest.raises(ConfigError, match="projection_dim 8 must equal"):
        Trainer(args=cfg).train()
    assert not (tmp_path / "checkpoint-1").exists()


# ----------------------------------------------------------------------------------------------- training
def test_training_decreases_the_loss_and_uses_layer_decay(tmp_path):
    trainer = Trainer(args=tiny_run_config(tmp_path, max_steps=12, logging_steps=4))
    summary = trainer.train()
    losses = [h["loss"] for h in summary["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    task = trainer.task
    assert task.uses_distillation and task.uses_alignment
    # layer-wise lr: patch embedding at 0.8^3 of the head's rate (depths [1, 1] → L = 4)
    optimizer = task.build_optimizer(task._base_schedule)
    scales = {p.name: lr.scale for p, lr in zip(optimizer.parameters, optimizer.learning_rate)}  # one lr per param
    assert scales["visual_encoder.patch_embed.proj.weight"] == pytest.approx(0.8 ** 3)
    assert scales["visual_encoder.layers.1.blocks.0.attn.qkv.weight"] == pytest.approx(0.8)
    assert scales["fc.weight"] == scales["visual_encoder.norm.weight"] == 1.0
    assert "label_embed" not in scales and "reweight_scale" in scales
    assert (tmp_path / "final" / "model.ckpt").is_file()
    assert json.loads((tmp_path / "train_metrics.json").read_text())["global_step"] == 12
    # the trained directory as Trainer(model=...) of the task's default config
    other = Trainer(task="image_tagging", model=tmp_path / "final", overrides={"output_dir": str(tmp_path / "o")},
                    eval_dataset=SyntheticTags(12, image_size=32, split="test"))
    assert isinstance(other.model, RAMPlus) and other.model.config.num_tags == 19
    assert 0.0 <= other.evaluate()["mAP"] <= 1.0


@pytest.mark.parametrize("accumulation", [1, 2])
def test_resume_is_exact(tmp_path, accumulation):
    """N updates in one run == N/2, stop, resume from the checkpoint, N/2 more (teacher, alignment, layer decay)."""
    steps = 4

    def run(out, max_steps, **kw):
        cfg = tiny_run_config(out, max_steps=max_steps, gradient_accumulation_steps=accumulation, **kw)
        cfg.merge_from_dict({"lr_schedule.total_steps": steps})
        trainer = Trainer(args=cfg)
        trainer.train()
        return trainer.model.state_dict()

    full = run(tmp_path / "full", steps)
    half = run(tmp_path / "split", steps // 2)
    resumed = run(tmp_path / "split", steps, resume_from_checkpoint="latest")
    assert full.keys() == resumed.keys()
    assert max(float(np.abs(full[k] - resumed[k]).max()) for k in full) <= 1e-6
    assert max(float(np.abs(full[k] - half[k]).max()) for k in full) > 1e-4


def test_resume_refuses_a_changed_tagging_transform(tmp_path):
    """The crop scale and flip decide the batches: resuming with other values would not be the same run."""
    cfg = tiny_run_config(tmp_path / "out", teacher=False, max_steps=1, train_transform=True)
    cfg.merge_from_dict({"tagging.horizontal_flip": True})
    Trainer(args=cfg).train()
    changed = tiny_run_config(tmp_path / "out", teacher=False, max_steps=2, train_transform=True,
                              resume_from_checkpoint="latest")
    changed.merge_from_dict({"tagging.horizontal_flip": False})
    with pytest.raises(ConfigError, match=r"tagging\.horizontal_flip: saved True, now False"):
        Trainer(args=changed).train()


# ----------------------------------------------------------------------------------------------- eval, predict
def test_evaluate_and_predict(tmp_path):
    make_openimages_folder(tmp_path / "oi")
    cfg = tiny_run_config(tmp_path / "out", teacher=False)
    cfg.merge_from_dict({"eval_dataset.data_loader": {"type": "TaggingAnnotations",
                                                      "dataset_dir": str(tmp_path / "oi")}})
    trainer = Trainer(args=cfg)
    metrics = trainer.evaluate()
    for key in ("mAP", "CP", "CR", "CF1"):
        assert 0.0 <= metrics[key] <= 1.0, metrics
    assert metrics["num_images"] == 5 and metrics["num_skipped"] == 1 and metrics["num_classes"] == 5
    assert json.loads((tmp_path / "out" / "eval_metrics.json").read_text())["num_images"] == 5
    # tagging.threshold 0 predicts every tag: recall 1 for each tag with a positive among the readable images
    trainer.task.tagging.threshold = 0.0
    targets = TaggingAnnotations(tmp_path / "oi").targets[[0, 1, 3, 4, 5]]
    assert trainer.evaluate()["CR"] == pytest.approx((targets.sum(0) > 0).mean())
    image = np.asarray(SyntheticTags(1, image_size=32)[0].image)
    result = trainer.predict([image, image], top_k=3)
    assert len(result) == 2 and len(result[0]) == 3 and result[0] == result[1]
    assert {"label", "label_cn", "score", "class_id"} == set(result[0][0])
    assert result[0][0]["score"] >= result[0][1]["score"] >= result[0][2]["score"]
    assert result[0][0]["label_cn"] == SYNTHETIC_TAGS_CHINESE[result[0][0]["class_id"]]
    # a tag outside the model's vocabulary needs the open-set path
    (tmp_path / "oi" / "x_ram_taglist.txt").write_text("circle\nred\nblue\nsquare\nleft\nzebra")
    with pytest.raises(ConfigError, match="open_set"):
        Trainer(args=cfg).evaluate()
    clip_dir = CLIPModel(CLIPConfig.from_dict(TEACHER)).save_pretrained(tmp_path / "clip")
    cfg.merge_from_dict({"tagging.open_set": True, "tagging.open_set_clip": str(clip_dir)})
    open_set = Trainer(args=cfg)
    model = open_set.model
    model.set_train(True)
    before = model_state(model)
    metrics = open_set.evaluate()
    assert metrics["num_classes"] == 6 and 0.0 <= metrics["mAP"] <= 1.0
    assert model_state(model) == before and model.training  # the eval vocabulary is not left on the model
    assert open_set.predict([image], top_k=1)[0][0]["label"] in SYNTHETIC_TAGS
    with pytest.raises(ConfigError, match="top_k"):
        open_set.predict([image], top_k=0)

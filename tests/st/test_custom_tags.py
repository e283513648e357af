"""Fine-tuning on custom tags (docs/ram.md#fine-tuning-on-custom-tags): new tags appended to a model's vocabulary
with label-embedding rows from a CLIP text tower are learned; zero rows (recognize-anything #211) are not.

The CLIP is random (no download). A random text tower maps every text to nearly the same direction (mean cosine
0.91 between the colour prompts here), which a 200-step fine-tune cannot separate (measured: held-out colour mAP
0.14-0.20, chance 0.125); a trained CLIP separates concepts. The fixture stands in for one by giving the random
tower a text projection that maps the 24 description texts of the new tags to orthonormal features (the
embeddings still come out of the text tower through ``add_custom_tags``).
"""
import json

import numpy as np
import pytest
import yaml

from mindram.data.base import Record
from mindram.data.tagging import SYNTHETIC_TAGS, SyntheticTags
from mindram.data.synthetic import COLOURS
from mindram.errors import ConfigError
from mindram.metrics import average_precision
from mindram.models.clip import CLIPConfig, CLIPModel
from mindram.models.ram import RAM, RAMConfig, RAMPlus, openset
from mindram.models.ram.custom_tags import add_custom_tags
from mindram.trainer.trainer import Trainer
from tests.conftest import ROOT

DEMO = ROOT / "configs" / "ram" / "run_ram_demo_synthetic.yaml"
NEW = list(COLOURS)                                   # the custom tags: the 8 colours
BASE = [t for t in SYNTHETIC_TAGS if t not in NEW]    # what the model knows before: shapes, sizes, positions
ORDER = BASE + NEW                                    # the extended vocabulary
TINY = {"image_size": 32, "label_embed_dim": 32, "descriptions_per_tag": 3, "threshold": 0.5,
        "vision_config": {"image_size": 32, "patch_size": 4, "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2],
                          "window_size": 4, "drop_path_rate": 0.0},
        "head_config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}}
DESCRIPTIONS = {c: [f"a photo of a {c}.", f"{c} paint", f"the colour {c} everywhere"] for c in NEW}


class ColoursLast(SyntheticTags):
    """SyntheticTags with its labels in the extended vocabulary's order (the colours after the other tags)."""

    tag_names = ORDER
    position = np.asarray([ORDER.index(t) for t in SYNTHETIC_TAGS])

    def __getitem__(self, index):
        record = super().__getitem__(index)
        return Record(record.image, record.caption, np.sort(self.position[record.label]).astype(np.int32))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("custom_tags")
    np.random.seed(7)
    clip = CLIPModel(CLIPConfig.from_dict({
        "projection_dim": 32,
        "vision_config": {"image_size": 16, "patch_size": 8, "hidden_size": 16, "num_hidden_layers": 1,
                          "num_attention_heads": 1, "intermediate_size": 32},
        "text_config": {"vocab_size": 49408, "max_position_embeddings": 16, "hidden_size": 32,
                        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}}))
    texts = openset.build_label_embed("ram_plus", NEW, DESCRIPTIONS, clip_model=clip, cache=False).reshape(24, 32)
    target = np.linalg.qr(np.random.default_rng(0).standard_normal((32, 24)))[0].T   # 24 orthonormal rows
    state = clip.state_dict()
    state["text.text_projection"] = (state["text.text_projection"] @ np.linalg.pinv(texts) @ target).astype(np.float32)
    clip.load_weights(state)
    clip.save_pretrained(tmp / "clip")
    (tmp / "base_tags.txt").write_text("\n".join(BASE), encoding="utf-8")
    (tmp / "custom_tags.txt").write_text("\n".join(NEW), encoding="utf-8")
    (tmp / "descriptions.json").write_text(json.dumps(DESCRIPTIONS), encoding="utf-8")
    return tmp, clip


def base_config(tmp, model_type="ram_plus"):
    return RAMConfig.from_dict({**TINY, "model_type": model_type, "num_tags": len(BASE),
                                "tag_list": str(tmp / "base_tags.txt"), "tag_list_chinese": str(tmp / "base_tags.txt"),
                                "threshold_file": None,
                                **({"descriptions_per_tag": 1} if model_type == "ram" else {})})


def test_add_custom_tags_returns_a_new_model_that_round_trips(files):
    tmp, clip = files
    model = RAMPlus(base_config(tmp))
    before = model.state_dict()
    extended = add_custom_tags(model, NEW, DESCRIPTIONS, clip_model=clip, cache=False, threshold=0.7)
    # the caller's model is unchanged
    assert model.tag_list == BASE and model.config.num_tags == len(BASE) and model.open_set_label_embed is None
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    # old rows kept, new rows = the descriptions' CLIP features (one row per description)
    assert extended.tag_list == ORDER and extended.config.num_tags == len(ORDER)
    np.testing.assert_allclose(extended.class_threshold, [0.5] * len(BASE) + [0.7] * len(NEW))
    rows = extended.state_dict()["label_embed"]
    np.testing.assert_array_equal(rows[:3 * len(BASE)], before["label_embed"])
    expected = openset.build_label_embed("ram_plus", NEW, DESCRIPTIONS, clip_model=clip, cache=False)
    np.testing.assert_allclose(rows[3 * len(BASE):], expected.reshape(-1, 32), atol=1e-6)
    # save_pretrained / from_pretrained round trip
    loaded = RAMPlus.from_pretrained(extended.save_pretrained(tmp / "saved"))
    assert loaded.tag_list == ORDER and loaded.tag_list_chinese == ORDER
    np.testing.assert_array_equal(loaded.class_threshold, extended.class_threshold)
    for name, value in extended.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value)
    with pytest.raises(ConfigError, match="already in the model's vocabulary"):
        add_custom_tags(extended, ["red"], clip_model=clip, cache=False)

    # RAM: the mean of the prompt-template features (the reference's open-set builder)
    ram = add_custom_tags(RAM(base_config(tmp, "ram")), ["red", "green"], clip_model=clip, cache=False)
    np.testing.assert_allclose(ram.state_dict()["label_embed"][len(BASE):],
                               openset.build_label_embed("ram", ["red", "green"], clip_model=clip, cache=False),
                               atol=1e-6)


def colour_scores(task, model, eval_source):
    """(mAP of the 8 colour tags on held-out images (chance: 1/8 per tag), their scores (N, 8))."""
    images = [eval_source[i].image for i in range(len(eval_source))]
    scores = model.get_tag_scores(task.image_processor()(images))[:, len(BASE):]
    targets = np.zeros_like(scores)
    for i in range(len(eval_source)):
        targets[i, NEW.index(eval_source.attributes(i)[0])] = 1
    return float(average_precision(scores, targets).mean()), scores


@pytest.mark.slow
def test_custom_tags_are_learned_and_zero_rows_are_not(files):
    tmp, _ = files
    cfg = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    cfg["model"]["model_config"].update(TINY, num_tags=len(BASE), tag_list=str(tmp / "base_tags.txt"),
                                        tag_list_chinese=str(tmp / "base_tags.txt"), threshold_file=None)
    cfg["tagging"].update(teacher=None, custom_tags=str(tmp / "custom_tags.txt"),
                          custom_tag_descriptions=str(tmp / "descriptions.json"), open_set_clip=str(tmp / "clip"))
    cfg["runner_config"].update(batch_size=16, max_steps=200, logging_steps=50, save_steps=None, num_workers=1)
    cfg["lr_schedule"].update(warmup_steps=5, learning_rate=3e-3)
    train, held_out = ColoursLast(3200, image_size=32, seed=1), SyntheticTags(256, image_size=32, split="test")

    def fine_tune(output, model=None):
        overrides = {"output_dir": str(tmp / output)}
        trainer = Trainer(args=cfg, model=model, train_dataset=train, overrides=overrides)
        model = trainer.task.model
        start = model.state_dict()
        trainer.train()
        return trainer.task, model, start

    task, tuned, start = fine_tune("custom")
    assert tuned.tag_list == ORDER
    zero = RAMPlus(tuned.config)  # the same start, with the new tags' rows zeroed (what #211 reports)
    start["label_embed"][3 * len(BASE):] = 0.0
    zero.load_weights(start)
    _, zero_tuned, _ = fine_tune("zero", zero)
    (custom_map, _), (zero_map, zero_scores) = colour_scores(task, tuned, held_out), colour_scores(task, zero_tuned,
                                                                                              held_out)
    print(f"held-out colour mAP: custom-initialised {custom_map:.3f}, zero-initialised {zero_map:.3f}, chance 0.125")
    # zero rows: the 8 new tags are one query, so every image scores them alike (up to float noise): nothing learned
    assert np.ptp(zero_scores, axis=1).max() < 1e-5 and zero_map < 0.2
    assert custom_map > 0.35

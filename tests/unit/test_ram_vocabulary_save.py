"""A RAM model's tag files travel with ``save_pretrained`` (RAMConfig.save / from_yaml, docs/ram.md#fine-tuning-on-
custom-tags): custom tags written under ``$MINDRAM_HOME`` are copied beside the saved config and named relative to
it; the package's own tag lists stay bare names."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from mindram.errors import ConfigError
from mindram.models.clip import CLIPConfig, CLIPModel
from mindram.models.ram import RAMConfig, RAMPlus, tags
from mindram.models.ram.configuration import DATA_DIR
from mindram.models.modeling_utils import write_checkpoint
from mindram.models.ram.custom_tags import add_custom_tags
from mindram.trainer.checkpointing import save_checkpoint
from mindram.utils.io import mindram_home

BASE = ["circle", "square", "triangle"]
TINY = {"model_type": "ram_plus", "image_size": 32, "label_embed_dim": 16, "descriptions_per_tag": 2,
        "threshold": 0.5, "num_tags": len(BASE), "threshold_file": None,
        "vision_config": {"image_size": 32, "patch_size": 8, "embed_dim": 8, "depths": [1], "num_heads": [1],
                          "window_size": 4, "drop_path_rate": 0.0},
        "head_config": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 32}}


def tiny_clip():
    return CLIPModel(CLIPConfig.from_dict({
        "projection_dim": 16,
        "vision_config": {"image_size": 16, "patch_size": 8, "hidden_size": 16, "num_hidden_layers": 1,
                          "num_attention_heads": 1, "intermediate_size": 32},
        "text_config": {"vocab_size": 49408, "max_position_embeddings": 16, "hidden_size": 16,
                        "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 32}}))


def base_model(tmp_path):
    (tmp_path / "base.txt").write_text("\n".join(BASE), encoding="utf-8")
    np.random.seed(0)
    return RAMPlus(RAMConfig.from_dict({**TINY, "tag_list": str(tmp_path / "base.txt"),
                                        "tag_list_chinese": str(tmp_path / "base.txt")}))


@pytest.fixture(scope="module")
def custom(tmp_path_factory):
    """A tiny RAM++ with two custom tags (files in the default $MINDRAM_HOME cache folder) and a test batch."""
    tmp = tmp_path_factory.mktemp("base")
    model = add_custom_tags(base_model(tmp), ["go-kart", "kite"], threshold=0.61,
                            tag_names_chinese=["卡丁车", "风筝"],
                            descriptions={"go-kart": ["a small racing car", "karting"], "kite": ["a kite", "sky"]},
                            clip_model=tiny_clip(), cache=False)
    pixels = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    return model, pixels, model.get_tag_logits(pixels)


def test_custom_tags_load_after_the_cache_is_deleted_from_another_cwd(custom, tmp_path, monkeypatch):
    model, pixels, logits = custom
    cache = Path(model.config.tag_list).parent
    assert mindram_home() in cache.parents
    saved = model.save_pretrained(tmp_path / "saved")
    model_config = yaml.safe_load((saved / "config.yaml").read_text(encoding="utf-8"))["model"]["model_config"]
    assert {k: model_config[k] for k in ("tag_list", "tag_list_chinese", "threshold_file")} == {
        "tag_list": "./tag_list.txt", "tag_list_chinese": "./tag_list_chinese.txt",
        "threshold_file": "./thresholds.txt"}
    for name, original in (("tag_list.txt", model.config.tag_list), ("thresholds.txt", model.config.threshold_file)):
        assert (saved / name).read_bytes() == Path(original).read_bytes()
    assert not list(saved.glob(".*"))  # no temporaries left
    aside = shutil.move(str(cache), str(tmp_path / "cache_aside"))  # the cache folder is gone while loading
    try:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        loaded = RAMPlus.from_pretrained("../saved")
    finally:
        shutil.move(aside, str(cache))  # the module's model still names it
    assert loaded.tag_list == BASE + ["go-kart", "kite"]
    assert loaded.tag_list_chinese == BASE + ["卡丁车", "风筝"]
    np.testing.assert_array_equal(loaded.class_threshold, model.class_threshold)
    assert loaded.class_threshold[-1] == np.float32(0.61)
    assert Path(loaded.config.tag_list) == saved.absolute() / "tag_list.txt"
    np.testing.assert_allclose(loaded.get_tag_logits(pixels), logits, atol=1e-6)
    assert loaded.config == model.config   # tag files compare by contents: the same model
    assert loaded.config != model.config.replace(tag_list_chinese=model.config.tag_list)

    moved = Path(shutil.move(str(saved), str(tmp_path / "moved")))   # a moved folder still loads
    config = RAMConfig.from_pretrained(moved)
    assert tags.read_tag_list(config.tag_list)[-1] == "kite"
    config.save(moved / "config.yaml")                                # saving into its own folder keeps the files
    assert RAMConfig.from_yaml(moved / "config.yaml") == config
    assert (moved / "tag_list.txt").read_text(encoding="utf-8").splitlines()[-1] == "kite"


def test_a_missing_saved_tag_file_names_the_file_and_the_config(custom, tmp_path):
    saved = custom[0].save_pretrained(tmp_path / "saved")
    (saved / "tag_list_chinese.txt").unlink()
    with pytest.raises(ConfigError, match=r"config\.yaml: tag_list_chinese './tag_list_chinese.txt' refers to .*"
                                          r"saved/tag_list_chinese\.txt, which does not exist"):
        RAMPlus.from_pretrained(saved)


def test_package_tag_files_stay_bare_names_and_nothing_is_copied(tmp_path):
    config = RAMConfig(model_type="ram", descriptions_per_tag=1)
    config.save(tmp_path / "config.yaml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]
    written = yaml.safe_load((tmp_path / "config.yaml").read_text(encoding="utf-8"))["model"]["model_config"]
    assert (written["tag_list"], written["threshold_file"]) == ("ram_tag_list.txt", "ram_tag_list_threshold.txt")
    assert RAMConfig.from_yaml(tmp_path / "config.yaml") == config
    assert config.data_path(config.tag_list) == DATA_DIR / "ram_tag_list.txt"


def test_open_set_vocabulary_is_not_saved(tmp_path):
    """An installed open-set/mixed vocabulary lives on the model only: the saved model has the closed set."""
    model = base_model(tmp_path)
    model.use_vocabulary(tags.Vocabulary(["kite"], ["风筝"], np.array([0.3], np.float32),
                                         np.zeros((1, 2, 16), np.float32), ()))
    saved = model.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in saved.iterdir()) == ["config.yaml", "model.ckpt", "tag_list.txt",
                                                       "tag_list_chinese.txt"]
    assert RAMPlus.from_pretrained(saved).tag_list == BASE


def test_a_missing_source_file_is_refused_before_writing(tmp_path):
    config = RAMConfig.from_dict({**TINY, "tag_list": str(tmp_path / "gone.txt"), "tag_list_chinese": "x/y.txt"})
    with pytest.raises(ConfigError, match=r"RAMConfig.tag_list: .*gone\.txt does not exist"):
        config.save(tmp_path / "out" / "config.yaml")
    assert not (tmp_path / "out" / "config.yaml").exists()


def test_trainer_checkpoints_and_sidecar_configs_carry_the_tag_files(custom, tmp_path):
    model = custom[0]
    checkpoint = save_checkpoint(tmp_path / "run", model, {"global_step": 3}, config=model.config)
    assert sorted(p.name for p in checkpoint.iterdir()) == ["config.yaml", "tag_list.txt", "tag_list_chinese.txt",
                                                           "thresholds.txt", "train_state.ckpt", "trainer_state.json"]
    assert tags.read_tag_list(RAMConfig.from_yaml(checkpoint / "config.yaml").tag_list_chinese)[-1] == "风筝"

    (tmp_path / "export").mkdir()
    model.config.save(tmp_path / "export" / "tagger.yaml")
    write_checkpoint(model.state_dict(), tmp_path / "export" / "tagger.ckpt")
    assert RAMPlus.from_pretrained(tmp_path / "export" / "tagger.ckpt").tag_list[-2:] == ["go-kart", "kite"]

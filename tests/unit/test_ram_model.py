"""RAM / RAM++ structure and configuration: full-size parameter names/shapes against the reference's
key lists (tests/fixtures/ram_keys/ram_keys_*.tsv), published parameter counts, configs and registration."""
import json

import numpy as np
import pytest
from mindspore import Tensor

import mindram.models.ram as ram
from mindram import catalog
from mindram.errors import ConfigError
from mindram.models.ram.configuration import DATA_DIR
from mindram.models.ram.convert import expected_shapes, to_torch_state_dict
from mindram.models.swin import SwinTransformer
from mindram.registry import MindFormerModuleType, MindFormerRegister
from tests.conftest import FIXTURES
from tests.fixtures.ram.loader import fixture_config

SPECS = FIXTURES / "ram_keys"
BUFFERS = ("relative_position_index", "attn_mask", "position_ids")
# docs/ram.md#parameters: unique parameter counts at 384 px (RAM with its caption modules)
COUNTS = {"ram_plus_swin_l_384": 329_493_046, "ram_swin_l_384": 469_148_785,
          "ram_plus_swin_b_384": 220_910_970, "ram_swin_b_384": 360_566_709}


def spec_keys(arch):
    """{torch name: shape} of the reference state dict, buffers left out."""
    model_type = "ram_plus" if arch.startswith("ram_plus") else "ram"
    vit = "swin_l" if "swin_l" in arch else "swin_b"
    rows = (SPECS / f"ram_keys_{model_type}_{vit}.tsv").read_text().splitlines()
    keys = {name: tuple(json.loads(shape)) for name, shape, _ in (r.split("\t") for r in rows)}
    return {k: v for k, v in keys.items() if not k.endswith(BUFFERS)}


def torch_shapes(shapes, config):
    """Our {name: shape} moved through the inverse converter (aliases re-emitted), as torch names."""
    arrays = {k: np.broadcast_to(np.float32(0), v) for k, v in shapes.items()}
    return {k: tuple(np.shape(v)) for k, v in to_torch_state_dict(arrays, config).items()}


def test_full_size_ram_plus_has_the_reference_parameters():
    """Build ram_plus_swin_l_384 once (329 M parameters) and compare with the reference key list."""
    config = ram.RAMConfig.from_pretrained("ram_plus_swin_l_384")
    model = ram.RAMPlus(config)
    shapes = model.checkpoint_shapes()   # label_embed: (4585, 51, 512) in memory, (233835, 512) in checkpoints
    assert tuple(model.label_embed.shape) == (4585, 51, 512)
    assert sum(int(np.prod(s)) for s in shapes.values()) == COUNTS["ram_plus_swin_l_384"]
    assert torch_shapes(shapes, config) == spec_keys("ram_plus_swin_l_384")
    swin = {k[len("visual_encoder."):]: v for k, v in shapes.items() if k.startswith("visual_encoder.")}
    assert expected_shapes(config, swin) == shapes
    assert model.image_processor.image_size == 384 and len(model.tag_list) == 4585


@pytest.mark.parametrize("arch", ["ram_swin_l_384", "ram_plus_swin_b_384", "ram_swin_b_384"])
def test_other_architectures_match_the_reference_key_lists(arch):
    config = ram.RAMConfig.from_pretrained(arch).replace(caption_modules=arch.startswith("ram_swin"))
    swin = {p.name: tuple(p.shape) for p in SwinTransformer(config.swin_config).get_parameters()}
    shapes = expected_shapes(config, swin)
    assert sum(int(np.prod(s)) for s in shapes.values()) == COUNTS[arch]
    assert torch_shapes(shapes, config) == spec_keys(arch)


def test_tiny_models_have_their_expected_shapes():
    for model_type, cls in (("ram", ram.RAM), ("ram_plus", ram.RAMPlus)):
        config = fixture_config(model_type)
        model = cls(config)
        swin = {p.name: tuple(p.shape) for p in model.visual_encoder.get_parameters()}
        swin = {k[len("visual_encoder."):]: v for k, v in swin.items()}
        assert model.checkpoint_shapes() == expected_shapes(config, swin)


def test_model_class_for_names_configs_directories_and_checkpoints(tmp_path):
    assert ram.model_class_for("ram_swin_l_384") is ram.RAM
    assert ram.model_class_for("ram_plus_swin_b_384") is ram.RAMPlus
    assert ram.model_class_for(fixture_config("ram")) is ram.RAM
    assert ram.model_class_for({"model_type": "ram_plus"}) is ram.RAMPlus
    fixture_config("ram").save(tmp_path / "config.yaml")
    assert ram.model_class_for(tmp_path) is ram.RAM  # a directory: its config.yaml
    (tmp_path / "ram_plus_tiny.ckpt").write_bytes(b"")
    assert ram.model_class_for(tmp_path / "ram_plus_tiny.ckpt") is ram.RAMPlus  # no sidecar: the file name
    fixture_config("ram").save(tmp_path / "ram_plus_tiny.yaml")
    assert ram.model_class_for(tmp_path / "ram_plus_tiny.ckpt") is ram.RAM  # the sidecar wins


def test_layer_ids_for_layer_decay():
    model = ram.RAMPlus(fixture_config("ram_plus"))
    depths = model.config.swin_config.depths
    assert model.num_layer_ids == sum(depths) + 2
    ids = {p.name: model.layer_id(p.name) for p in model.trainable_params()}
    assert ids["visual_encoder.patch_embed.proj.weight"] == 0
    assert ids["visual_encoder.norm.weight"] == ids["fc.weight"] == ids["image_proj.weight"] == sum(depths) + 1
    assert set(ids.values()) == set(range(model.num_layer_ids))


def test_tied_caption_weights_are_shared_objects():
    model = ram.RAM(fixture_config("ram"))
    head, encoder = model.tagging_head.encoder.layer, model.tag_encoder.encoder.layer
    for i in range(2):
        assert encoder[i].crossattention.self.query.weight is head[i].crossattention.self.query.weight
        assert encoder[i].output.LayerNorm.bias is head[i].output.LayerNorm.bias
        assert encoder[i].attention.self.query.weight is not head[i].crossattention.self.query.weight
    own = encoder[2].crossattention.self.key.weight
    assert own.name == "tag_encoder.encoder.layer.2.crossattention.self.key.weight"
    assert head[0].intermediate.dense.weight.name == "tagging_head.encoder.layer.0.intermediate.dense.weight"


def test_yaml_head_and_caption_configs_equal_the_reference_json():
    q2l = json.loads((DATA_DIR / "q2l_config.json").read_text())
    med = json.loads((DATA_DIR / "med_config.json").read_text())
    for arch in catalog.architectures("ram"):
        config = ram.RAMConfig.from_pretrained(arch)
        for bert, ref in ((config.head_config, q2l), (config.caption_config, med)):
            for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                        "hidden_act", "layer_norm_eps", "max_position_embeddings"):
                assert getattr(bert, key) == ref[key], (arch, key)
        assert config.caption_config.vocab_size == med["vocab_size"]
        assert config.image_size == 384 and config.swin_config.window_size == 12
        assert config.vision_width == {"swin_l": 1536, "swin_b": 1024}[config.vit]
        assert config.descriptions_per_tag == (51 if config.model_type == "ram_plus" else 1)


def test_support_list_registry_and_catalog():
    names = ram.RAMPlus.show_support_list()
    assert {"ram_plus_swin_l_384", "ram_swin_l_384", "ram_plus_swin_b_384", "ram_swin_b_384",
            "ram_plus_swin_l_384.14m"} <= set(names)
    assert ram.RAMConfig.show_support_list() == names
    for name, obj in (("RAM", ram.RAM), ("RAMPlus", ram.RAMPlus)):
        assert MindFormerRegister.get_cls(MindFormerModuleType.MODELS, name) is obj
    assert MindFormerRegister.get_cls(MindFormerModuleType.CONFIG, "RAMConfig") is ram.RAMConfig
    record = catalog.resolve("ram", "ram_plus_swin_l_384")
    assert record.file.endswith(".safetensors") and "ram_plus_swin_large_14m.pth" in record.source
    with pytest.raises(Exception, match="convert"):
        ram.RAMPlus.from_pretrained("ram_plus_swin_l_384")  # nothing converted in the private MINDRAM_HOME


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="model_type"):
        ram.RAMConfig(model_type="tag2text")
    with pytest.raises(ConfigError, match="unknown key"):
        ram.RAMConfig.from_dict({"num_classes": 3})
    with pytest.raises(ConfigError, match="descriptions_per_tag"):
        ram.RAMConfig(model_type="ram", descriptions_per_tag=51)
    with pytest.raises(ConfigError, match="delete_tag_index"):
        ram.RAMConfig(delete_tag_index=[4585])
    with pytest.raises(ConfigError, match="vit"):
        ram.RAMConfig(vit="vit_b")
    with pytest.raises(ConfigError, match="caption_modules"):
        ram.RAMConfig(model_type="ram_plus", caption_modules=True)
    with pytest.raises(ConfigError, match="model_type 'ram'"):
        ram.RAM(fixture_config("ram_plus"))
    with pytest.raises(ConfigError, match="num_tags"):
        ram.RAMPlus(fixture_config("ram_plus", num_tags=31))


def test_config_round_trips_and_follows_vit(tmp_path):
    config = ram.RAMConfig.from_pretrained("ram_plus_swin_l_384")
    assert config.replace(vit="swin_b").vision_width == 1024  # the preset follows vit when not pinned
    config.save(tmp_path / "config.yaml")
    assert ram.RAMConfig.from_pretrained(tmp_path) == config
    tiny = fixture_config("ram")
    tiny.save(tmp_path / "tiny.yaml")
    assert ram.RAMConfig.from_pretrained(tmp_path / "tiny.yaml") == tiny


def test_fields_change_the_network():
    """Every structural field shows in the parameters; tag-file fields show in the vocabulary."""
    base = fixture_config("ram_plus")
    shapes = {p.name: p.shape for p in ram.RAMPlus(base).get_parameters()}
    changes = {"descriptions_per_tag": 2, "label_embed_dim": 16,
               "head_config": {**base.head_config.to_dict(), "intermediate_size": 48}}
    for key, value in changes.items():
        other = {p.name: p.shape for p in ram.RAMPlus(base.replace(**{key: value})).get_parameters()}
        assert other != shapes, key
    model = ram.RAMPlus(base.replace(threshold_file=None, threshold=0.3, delete_tag_index=[1]))
    assert np.all(model.class_threshold == np.float32(0.3)) and model.delete_tag_index == [1]


def test_save_and_load_pretrained(tmp_path):
    model = ram.RAM(fixture_config("ram"))
    model.save_pretrained(tmp_path / "tiny_ram")
    loaded = ram.RAM.from_pretrained(tmp_path / "tiny_ram")
    assert loaded.config == model.config and loaded.tag_list == model.tag_list
    pixels = Tensor(np.random.default_rng(0).standard_normal((1, 3, 96, 96)).astype(np.float32))
    np.testing.assert_array_equal(loaded(pixels).asnumpy(), model(pixels).asnumpy())

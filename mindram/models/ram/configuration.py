"""RAM / RAM++ configuration.

``RAMConfig.from_pretrained(name)`` reads ``mindram/configs/ram/model/<arch>.yaml`` chosen by the
catalog (``mindram/configs/ram/pretrained.yaml``). The image encoder is described by ``vit``
(``swin_l``/``swin_b``) and ``image_size``, which select the reference Swin hyper-parameters
(``mindram/configs/swin/model/<vit>_<image_size>.yaml``); ``vision_config`` replaces them
with explicit :class:`mindram.models.swin.SwinConfig` fields (tests use tiny encoders). The tagging
head and the RAM caption modules are BERT configs whose defaults are the reference
``q2l_config.json`` and ``med_config.json``.
"""
import dataclasses
import filecmp
import math
import os
import shutil
from pathlib import Path
from typing import Optional

from ...errors import ConfigError
from ...utils.io import atomic_write
from ..configuration_utils import BaseConfig, PretrainedConfig, check_transformer_config
from ..swin import SwinConfig

FAMILY = "ram"
DATA_DIR = Path(__file__).resolve().parent / "data"
MODEL_TYPES = {"ram": "RAM", "ram_plus": "RAMPlus"}

VITS = ("swin_l", "swin_b")

# Tag files in a saved config: a bare name is a file of DATA_DIR, ``./<name>`` a file beside the config file
# (what :meth:`RAMConfig.save` writes for any other file, under these names), anything else a path as given.
BESIDE_CONFIG = "./"
SAVED_TAG_FILES = {"tag_list": "tag_list.txt", "tag_list_chinese": "tag_list_chinese.txt",
                   "threshold_file": "thresholds.txt"}


def swin_preset(vit, image_size):
    """The reference encoder of ``vit`` at ``image_size`` (``mindram/configs/swin/model/<vit>_<size>.yaml``)."""
    if vit not in VITS:
        raise ConfigError(f"RAMConfig.vit: expected one of {VITS} (or give vision_config), got {vit!r}")
    try:
        return SwinConfig.from_pretrained(f"{vit}_{image_size}")
    except KeyError as e:
        raise ConfigError(f"no reference Swin for vit={vit!r} at image_size={image_size} (or give vision_config): "
                          f"{e}") from e


@dataclasses.dataclass
class BertConfig(BaseConfig):
    """A BLIP-style BERT stack; the defaults are the tagging head's ``q2l_config.json``.

    ``vocab_size`` and ``max_position_embeddings`` only matter where embeddings
    exist (the RAM caption modules); the tagging head has none (docs/ram.md#tagging-head).
    """

    hidden_size: int = 768
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    vocab_size: int = 30522
    max_position_embeddings: int = 512

    def validate(self):
        check_transformer_config(self, "BertConfig")  # positive sizes, heads dividing the width, a known activation


def _med_config():
    return BertConfig(num_hidden_layers=12, num_attention_heads=12, vocab_size=30524)


@dataclasses.dataclass
class RAMConfig(PretrainedConfig):
    """RAM (``model_type: ram``) or RAM++ (``ram_plus``): Swin encoder + Query2Label tagging head.

    Tag files (``tag_list``, ``tag_list_chinese``, ``threshold_file``) are names inside the package's
    ``models/ram/data`` folder or paths; :meth:`save` copies any other file beside the YAML it writes and
    refers to it as ``./<name>``, which :meth:`from_yaml` resolves against that YAML's folder. Thresholds
    follow the reference (docs/ram.md#tag-selection): every tag starts at ``threshold``, then entry k of
    ``threshold_file`` overrides tag k.
    ``caption_modules`` (RAM only) adds the captioning-only ``tag_encoder``/``text_decoder`` that
    the RAM checkpoint carries; inference never uses them, so they are off by default.
    """

    model_type: str = "ram_plus"
    vit: str = "swin_l"
    image_size: int = 384
    vision_config: Optional[SwinConfig] = None
    head_config: Optional[BertConfig] = None
    caption_modules: bool = False
    caption_config: Optional[BertConfig] = None
    num_tags: int = 4585
    label_embed_dim: int = 512
    descriptions_per_tag: int = 51
    reweight_scale_init: float = math.log(1 / 0.07)
    threshold: float = 0.68
    tag_list: str = "ram_tag_list.txt"
    tag_list_chinese: str = "ram_tag_list_chinese.txt"
    threshold_file: Optional[str] = "ram_tag_list_threshold.txt"
    delete_tag_index: Optional[list] = None
    checkpoint_name_or_path: Optional[str] = None

    family = FAMILY
    nested = {"head_config": BertConfig, "caption_config": BertConfig}
    #: fields a run config sets for itself whatever architecture its weights declare (mindram.trainer.start_weights)
    run_settings = ("threshold", "tag_list", "tag_list_chinese", "threshold_file", "delete_tag_index",
                    "caption_modules", "caption_config", "reweight_scale_init", "vision_config.drop_path_rate")

    def __post_init__(self):
        if self.caption_config is None:
            self.caption_config = _med_config()
        if self.delete_tag_index is None:
            self.delete_tag_index = []
        if isinstance(self.vision_config, dict):
            try:
                self.vision_config = SwinConfig.from_dict(self.vision_config)
            except ConfigError as e:
                raise ConfigError(f"RAMConfig.vision_config -> {e}") from e
        super().__post_init__()

    def validate(self):
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"RAMConfig.model_type: expected one of {sorted(MODEL_TYPES)}, got {self.model_type!r}")
        if self.vision_config is None:
            swin_preset(self.vit, self.image_size)
        elif not isinstance(self.vision_config, SwinConfig):
            raise ConfigError(f"RAMConfig.vision_config: expected a mapping of SwinConfig fields, "
                              f"got {type(self.vision_config).__name__}")
        elif self.vision_config.image_size != self.image_size:
            raise ConfigError(f"RAMConfig.image_size={self.image_size} differs from "
                              f"vision_config.image_size={self.vision_config.image_size}")
        for key in ("image_size", "num_tags", "label_embed_dim", "descriptions_per_tag"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"RAMConfig.{key}: expected a positive value, got {getattr(self, key)!r}")
        if self.model_type == "ram" and self.descriptions_per_tag != 1:
            raise ConfigError(f"RAMConfig.descriptions_per_tag must be 1 for model_type 'ram' (one embedding per "
                              f"tag), got {self.descriptions_per_tag}")
        if self.caption_modules and self.model_type != "ram":
            raise ConfigError("RAMConfig.caption_modules: only RAM (model_type 'ram') has caption modules")
        shared = ("hidden_size", "intermediate_size", "layer_norm_eps")
        if self.caption_modules and any(getattr(self.caption_config, k) != getattr(self.head_config, k)
                                        for k in shared):
            raise ConfigError(f"RAMConfig.caption_config must have the head's {', '.join(shared)}: the first two "
                              f"tag_encoder layers share the tagging head's weights")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"RAMConfig.threshold: expected a value in [0, 1], got {self.threshold!r}")
        bad = [i for i in self.delete_tag_index
               if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.num_tags]
        if bad:
            raise ConfigError(f"RAMConfig.delete_tag_index: entries must be tag indices in [0, {self.num_tags}), "
                              f"got {bad}")

    @property
    def swin_config(self):
        """The image encoder's :class:`SwinConfig`: ``vision_config``, else the reference one of (vit, image_size)."""
        return self.vision_config if self.vision_config is not None else swin_preset(self.vit, self.image_size)

    @property
    def vision_width(self):
        return self.swin_config.num_features

    def arch_type(self):
        return MODEL_TYPES[self.model_type]

    def data_path(self, name):
        """A tag/threshold file: a bare file name is one of the package's data folder, a path is used as given
        (``./<name>`` too: relative to the working directory unless read by :meth:`from_yaml`)."""
        path = Path(name).expanduser()
        return path if path.is_absolute() or len(path.parts) > 1 or name.startswith(BESIDE_CONFIG) \
            else DATA_DIR / name

    def __eq__(self, other):
        """Equal configs describe the same model: tag files are equal when they name the same file or files with
        the same contents (so a config equals itself saved and read back from another folder)."""
        if type(other) is not type(self):
            return NotImplemented
        keys = [key for key in self.field_names() if key not in SAVED_TAG_FILES]
        return all(getattr(self, key) == getattr(other, key) for key in keys) and all(
            self._same_tag_file(getattr(self, key), other.data_path, getattr(other, key)) for key in SAVED_TAG_FILES)

    def _same_tag_file(self, value, other_data_path, other_value):
        if value is None or other_value is None:
            return value is other_value
        mine, theirs = self.data_path(value), other_data_path(other_value)
        if mine == theirs:
            return True
        return mine.is_file() and theirs.is_file() and filecmp.cmp(mine, theirs, shallow=False)

    @classmethod
    def from_yaml(cls, path):
        """As :meth:`PretrainedConfig.from_yaml`; ``./<name>`` tag files become paths in the YAML's folder."""
        config = super().from_yaml(path)
        folder = Path(os.path.abspath(Path(path).expanduser())).parent  # '..' folded, links kept
        beside = {}
        for key in SAVED_TAG_FILES:
            value = getattr(config, key)
            if value is not None and value.startswith(BESIDE_CONFIG):
                file = folder / value[len(BESIDE_CONFIG):]
                if not file.is_file():
                    raise ConfigError(f"{path}: {key} {value!r} refers to {file}, which does not exist "
                                      f"(save_pretrained writes the tag files beside the config; keep them together)")
                beside[key] = str(file)
        return config.replace(**beside) if beside else config

    def save(self, path):
        """Write the YAML (see :meth:`PretrainedConfig.save`); tag files other than the package's are copied beside
        it (atomically, verified) as ``tag_list.txt``, ``tag_list_chinese.txt`` and ``thresholds.txt``, and named
        ``./<name>``, so the folder is self-contained."""
        folder = Path(path).parent
        portable = {key: self._saved_tag_file(key, folder) for key in SAVED_TAG_FILES}
        super(RAMConfig, self.replace(**portable)).save(path)

    def _saved_tag_file(self, key, folder):
        """The value of ``key`` in a config saved into ``folder``, after copying its file there if needed."""
        value = getattr(self, key)
        if value is None:
            return None
        source = self.data_path(value)
        if source.parent == DATA_DIR and (DATA_DIR / source.name).is_file():
            return source.name
        if not source.is_file():
            raise ConfigError(f"RAMConfig.{key}: {source} does not exist; cannot save the config without it")
        target = folder / SAVED_TAG_FILES[key]

        def same_as_source(tmp):
            if not filecmp.cmp(source, tmp, shallow=False):
                raise ConfigError(f"{target}: the copy of {source} differs from it; nothing written")

        with atomic_write(target, check=same_as_source, allow_empty=True) as tmp:
            shutil.copyfile(source, tmp)
        return BESIDE_CONFIG + target.name

"""CLIP configuration (MindFormers / Hugging Face field names, open_clip semantics).

``CLIPConfig.from_pretrained(name)`` reads the architecture YAML under
``mindram/configs/clip/model/`` chosen by the catalog (``mindram/configs/clip/pretrained.yaml``):
a bare MindFormers name such as ``clip_vit_b_32`` means its default weights (OpenAI, QuickGELU);
``clip_vit_b_32.laion2b_s34b_b79k`` names other weights; an architecture name such as
``clip_vit_b_32_quickgelu`` is the architecture alone.
"""
import dataclasses
import math
from typing import Optional

from ...errors import ConfigError
from ..configuration_utils import BaseConfig, PretrainedConfig, check_transformer_config

FAMILY = "clip"


@dataclasses.dataclass
class CLIPVisionConfig(BaseConfig):
    """Vision tower: ViT with class token, ``ln_pre``, ``ln_post`` and a (width, D) projection.

    ``max_batch_tokens``: ``get_image_features`` runs a batch in calls of at most this many tokens (items ×
    (grid² + 1)), a power of two images each (:mod:`mindram.utils.batching`); the features are the same, large
    batches run faster and in less memory (ViT-L/14 at batch 32: two calls of 16). ``None`` never splits.
    """

    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    max_batch_tokens: Optional[int] = 6400

    def validate(self):
        check_transformer_config(self, "vision_config")
        if self.patch_size > self.image_size:
            raise ConfigError(f"vision_config.patch_size={self.patch_size} exceeds image_size={self.image_size}")

    @property
    def grid_size(self):
        return self.image_size // self.patch_size

    @property
    def num_tokens(self):
        """Tokens per image: the patches and the class token."""
        return self.grid_size ** 2 + 1


@dataclasses.dataclass
class CLIPTextConfig(BaseConfig):
    """Text tower: causal transformer pooled at the EOT token (argmax of the ids).

    ``trim_padding``: ``get_text_features`` runs the tower on the positions up to the batch's last EOT token
    only (rounded up to a power of two, at least 8, so few graph shapes are compiled). The result is the same,
    since the causal mask keeps later positions out of the EOT token's features; short prompts cost a
    fraction of the full context. False runs every position, as open_clip does.
    """

    vocab_size: int = 49408
    max_position_embeddings: int = 77
    hidden_size: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    intermediate_size: int = 2048
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    trim_padding: bool = True

    def validate(self):
        check_transformer_config(self, "text_config")


@dataclasses.dataclass
class CLIPConfig(PretrainedConfig):
    """Both towers, the shared embedding width and the logit scale."""

    family = FAMILY
    arch_name = "CLIPModel"
    #: fields a run config sets for itself whatever architecture its weights declare (mindram.trainer.start_weights)
    run_settings = ("logit_scale_init_value", "vision_config.max_batch_tokens", "text_config.trim_padding")

    text_config: Optional[CLIPTextConfig] = None
    vision_config: Optional[CLIPVisionConfig] = None
    projection_dim: int = 512
    logit_scale_init_value: float = math.log(1 / 0.07)
    checkpoint_name_or_path: Optional[str] = None
    compute_dtype: str = "float32"

    nested = {"text_config": CLIPTextConfig, "vision_config": CLIPVisionConfig}

    @classmethod
    def from_dict(cls, data):
        """Build from a mapping (strict); MindFormers' ``CLIPConfig`` fields are translated first:
        ``dtype`` is ``compute_dtype`` and ``ratio`` (the attention head width, 64 in every CLIP) sets both
        towers' ``num_attention_heads = hidden_size // ratio`` — as MindFormers builds the network from them.
        A translated key that contradicts the mindram key given beside it is a ``ConfigError``."""
        if isinstance(data, dict) and ("dtype" in data or "ratio" in data):
            data = _translate_mindformers_keys(data)
        return super().from_dict(data)

    @property
    def dtype(self):
        """MindFormers' name of :attr:`compute_dtype`."""
        return self.compute_dtype

    @property
    def ratio(self):
        """MindFormers' ``ratio``: the attention head width when both towers share it, else None."""
        widths = {c.hidden_size // c.num_attention_heads for c in (self.text_config, self.vision_config)}
        return widths.pop() if len(widths) == 1 else None

    def validate(self):
        if self.projection_dim <= 0:
            raise ConfigError(f"CLIPConfig.projection_dim: expected a positive value, got {self.projection_dim!r}")
        if self.compute_dtype not in ("float32", "float16"):
            raise ConfigError(f"CLIPConfig.compute_dtype: expected float32 or float16 (bfloat16 has no MindSpore "
                              f"2.10 CPU kernels), got {self.compute_dtype!r}")


def _translate_mindformers_keys(data):
    """``data`` with MindFormers' ``dtype``/``ratio`` turned into mindram keys (see :meth:`CLIPConfig.from_dict`)."""
    data = dict(data)
    if "dtype" in data:
        dtype = data.pop("dtype")
        if data.get("compute_dtype", dtype) != dtype:
            raise ConfigError(f"CLIPConfig: dtype={dtype!r} (MindFormers' compute dtype) contradicts "
                              f"compute_dtype={data['compute_dtype']!r}; give one of them")
        data["compute_dtype"] = dtype
    if "ratio" in data:
        ratio = data.pop("ratio")
        if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio <= 0:
            raise ConfigError(f"CLIPConfig.ratio: expected a positive int (attention head width, e.g. 64), "
                              f"got {ratio!r}")
        for key, tower in (("text_config", CLIPTextConfig), ("vision_config", CLIPVisionConfig)):
            sub = data.get(key)
            sub = dict(sub.to_dict() if isinstance(sub, BaseConfig) else (sub or {}))
            width = sub.get("hidden_size", tower.hidden_size)
            if width % ratio:
                raise ConfigError(f"CLIPConfig.ratio={ratio}: {key}.hidden_size={width} is not a multiple of it")
            heads = width // ratio
            if sub.get("num_attention_heads", heads) != heads:
                raise ConfigError(f"CLIPConfig.ratio={ratio} means {key}.num_attention_heads={heads} "
                                  f"(hidden_size {width} / ratio), but num_attention_heads="
                                  f"{sub['num_attention_heads']} is given; give one of them")
            sub["num_attention_heads"] = heads
            data[key] = sub
    return data

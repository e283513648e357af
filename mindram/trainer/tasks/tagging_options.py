"""The ``tagging`` section of an ``image_tagging`` run config: :class:`TaggingOptions` (every key, its default and
its check), the loss-weight check, and how tag/threshold file names in a run config are resolved."""
import dataclasses
from pathlib import Path
from typing import Any, Optional

from ...errors import ConfigError
from ...losses import ALIGNMENT_LOSS, TAG_LOSS
from ...losses.tagging_loss import LOSS_WEIGHTS
from ...models.clip import CLIPConfig
from ...models.configuration_utils import BaseConfig
from ...utils.validation import check_threshold

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def check_loss_weights(weights):
    """``tagging.loss_weights`` completed with :data:`LOSS_WEIGHTS`' defaults; ConfigError for an unknown term or
    a weight that is not a number >= 0."""
    weights = {} if weights is None else weights
    if not isinstance(weights, dict):
        raise ConfigError(f"loss_weights: expected a mapping over {sorted(LOSS_WEIGHTS)}, got {weights!r}")
    unknown = sorted(set(weights) - set(LOSS_WEIGHTS))
    if unknown:
        raise ConfigError(f"loss_weights: unknown loss term(s) {unknown}; allowed: {sorted(LOSS_WEIGHTS)}")
    for key, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ConfigError(f"loss_weights.{key}: expected a number >= 0, got {value!r}")
    return {**LOSS_WEIGHTS, **{key: float(value) for key, value in weights.items()}}


@dataclasses.dataclass
class TaggingOptions(BaseConfig):
    """The ``tagging`` section of a run config (every key optional).

    teacher: CLIP teacher for distillation/alignment: a CLIP name (``clip_vit_b_16``, the reference's), a
        directory or checkpoint, a mapping of CLIPConfig fields (random frozen weights: tests and demos), or
        null (no teacher: tag loss only). distillation / alignment: switch those losses off (alignment is RAM++
        only). tag_loss / alignment_loss: AsymmetricLoss arguments (gamma_neg, gamma_pos, clip).
    loss_weights: weight of each loss term in the total, a mapping over ``tag``, ``dis``, ``alignment``, ``t2t``
        (missing: 1, the reference's combination; :mod:`mindram.losses.tagging_loss`).
    caption_loss: train RAM's caption generation too (``loss_t2t``; a RAM with caption modules and parse tags in
        the training json, :mod:`mindram.trainer.caption_training`); caption_tokenizer: its BERT ``vocab.txt``
        (or a folder holding one; null: bert-base-uncased).
    layer_decay: layer-wise lr decay factor in (0, 1] for the Swin encoder (module docstring), null = off.
    train_scale, horizontal_flip: the train transform (RandomResizedCrop scale; flip). Used when
        ``runner_config.train_transform`` is true.
    threshold / threshold_file: evaluation and predict thresholds (one value; one per dataset tag).
    open_set, open_set_descriptions, open_set_clip: evaluate on tags outside the model's vocabulary with
        open-set embeddings (RAM++: a descriptions json like the reference's LLM file) from that CLIP.
    output_format / language: predict output, ``list`` (default) or ``paddleclas`` (PaddleClas' RamOutPut dict)
        with its names in ``cn`` (default) or ``en`` (``mindram.pipeline.image_tagging.paddleclas_output``).
    teacher_features: a store written by ``python -m mindram.extract_teacher_features``: training reads the
        teacher's features from it and never runs the teacher (docs/ram.md#offline-teacher-features).
    custom_tags / custom_tag_descriptions: a tag list file (and a descriptions json) of new tags appended to the
        model's vocabulary when it is built, their label embeddings from ``open_set_clip``'s text tower
        (:func:`mindram.models.ram.custom_tags.add_custom_tags`; docs/ram.md#fine-tuning-on-custom-tags).
    """

    teacher: Any = None
    distillation: bool = True
    alignment: bool = True
    tag_loss: Optional[dict] = None
    alignment_loss: Optional[dict] = None
    loss_weights: Optional[dict] = None
    caption_loss: bool = False
    caption_tokenizer: Optional[str] = None
    layer_decay: Optional[float] = None
    train_scale: Optional[list] = None
    horizontal_flip: bool = True
    threshold: Optional[float] = None
    threshold_file: Optional[str] = None
    open_set: bool = False
    open_set_descriptions: Optional[str] = None
    open_set_clip: str = "clip_vit_b_16"
    output_format: str = "list"
    language: Optional[str] = None
    teacher_features: Optional[str] = None
    custom_tags: Optional[str] = None
    custom_tag_descriptions: Optional[str] = None

    def validate(self):
        from ...pipeline.image_tagging import check_output_options
        check_output_options(self.output_format, self.language)
        if self.teacher is not None and not isinstance(self.teacher, (str, dict)):
            raise ConfigError(f"teacher: expected a CLIP name/path, a mapping of CLIPConfig fields or null, "
                              f"got {self.teacher!r}")
        if isinstance(self.teacher, dict):
            CLIPConfig.from_dict(self.teacher)
        for key, defaults in (("tag_loss", TAG_LOSS), ("alignment_loss", ALIGNMENT_LOSS)):
            value = getattr(self, key) or {}
            if not isinstance(value, dict) or set(value) - set(defaults):
                raise ConfigError(f"{key}: expected a mapping with keys among {sorted(defaults)}, got {value!r}")
            setattr(self, key, {**defaults, **value})
        self.loss_weights = check_loss_weights(self.loss_weights)
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(f"layer_decay: expected a value in (0, 1] or null, got {self.layer_decay!r}")
        scale = [0.2, 1.0] if self.train_scale is None else self.train_scale
        if not (isinstance(scale, (list, tuple)) and len(scale) == 2 and 0.0 < scale[0] <= scale[1] <= 1.0):
            raise ConfigError(f"train_scale: expected [lo, hi] with 0 < lo <= hi <= 1, got {scale!r}")
        self.train_scale = [float(s) for s in scale]
        if self.threshold is not None:
            check_threshold(self.threshold, "threshold")


def parse_tagging_options(section):
    data = section.to_dict() if hasattr(section, "to_dict") else dict(section or {})
    try:
        return TaggingOptions.from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"tagging: {e}") from e


def resolve_data_file(value):
    """A tag/threshold file named in a run config: bare names stay (RAMConfig's data folder); a relative path
    is taken from the working directory, else from the mindram package (``data/synthetic_tags/...``)."""
    if not value:
        return value
    path = Path(str(value)).expanduser()
    if path.is_absolute() or len(path.parts) == 1:
        return value
    if path.exists():
        return str(path.resolve())
    return str(PACKAGE_ROOT / path) if (PACKAGE_ROOT / path).exists() else value

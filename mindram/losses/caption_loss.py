"""RAM's image-tag-text generation loss (``loss_t2t`` of the reference ``RAM.forward``).

``tag_encoder`` reads the tag text (ids + mask, ``[ENC]`` first) with cross-attention to the projected
image tokens; ``text_decoder`` predicts the caption from that encoding; the loss is torch's
``CrossEntropyLoss(label_smoothing=0.1, ignore_index=-100)`` (mean over the counted tokens) of the logits
at positions 0 … L−2 against the targets at 1 … L−1. Per counted token,
``(1 − ε)·(−log p[target]) + ε·mean_c(−log p[c])``. The arrays come from
:func:`mindram.models.ram.captioning.caption_training_inputs` (or :meth:`CaptionLoss.inputs`).

The reference joins the losses as ``loss_t2t + loss_tag / detach(loss_tag / loss_t2t) + loss_dis``.
"""
import mindspore as ms
from mindspore import nn, ops

from ..errors import ConfigError

IGNORE_INDEX = -100
LABEL_SMOOTHING = 0.1


class LabelSmoothedCrossEntropy(nn.Cell):
    """``(logits (..., V), targets (...)) → scalar``: torch's ``CrossEntropyLoss(label_smoothing, ignore_index)``
    with mean reduction. With no counted token it returns 0 (torch: NaN), so one such batch cannot poison
    training."""

    def __init__(self, label_smoothing=LABEL_SMOOTHING, ignore_index=IGNORE_INDEX):
        super().__init__()
        if not 0.0 <= float(label_smoothing) <= 1.0:
            raise ConfigError(f"label_smoothing: expected a value in [0, 1], got {label_smoothing!r}")
        self.smoothing, self.ignore_index = float(label_smoothing), int(ignore_index)

    def construct(self, logits, targets):
        log_probs = ops.log_softmax(logits.astype(ms.float32), axis=-1)
        counted = targets != self.ignore_index
        classes = ops.where(counted, targets, ops.zeros_like(targets)).astype(ms.int32)
        picked = ops.gather_elements(log_probs, -1, classes.expand_dims(-1)).squeeze(-1)
        per_token = -(1.0 - self.smoothing) * picked - self.smoothing * log_probs.mean(axis=-1)
        weights = counted.astype(ms.float32)
        return (per_token * weights).sum() / ops.maximum(weights.sum(), 1.0)


class CaptionLoss(nn.Cell):
    """``loss_t2t`` of a RAM with caption modules (module doc): ``construct(image_embeds, tag_ids, tag_mask,
    caption_ids, caption_mask, targets) → scalar``.

    ``image_embeds``: (B, 1+L, 512) ``model.image_proj(model.visual_encoder(x))`` (all tokens); ids and masks
    int32 (B, 40) for the tags, (B, T) for the caption, ``targets`` (B, T) with -100 where not counted.
    Parameter names stay the model's (no prefix), so the cell can sit inside another loss cell.
    """

    def __init__(self, model, label_smoothing=LABEL_SMOOTHING):
        super().__init__(auto_prefix=False)
        from ..models.ram.captioning import check_caption_model
        check_caption_model(model)
        self.model = model
        self.cross_entropy = LabelSmoothedCrossEntropy(label_smoothing)

    @staticmethod
    def inputs(tokenizer, tags, captions, padding="max_length"):
        """The int32 arrays after ``image_embeds``, in ``construct``'s order, for a batch of tags and captions
        (:func:`mindram.models.ram.captioning.caption_training_inputs`)."""
        from ..models.ram.captioning import caption_training_inputs
        arrays = caption_training_inputs(tokenizer, tags, captions, padding=padding)
        return tuple(arrays[k] for k in ("tag_ids", "tag_mask", "caption_ids", "caption_mask", "targets"))

    def construct(self, image_embeds, tag_ids, tag_mask, caption_ids, caption_mask, targets):
        context = self.model.tag_encoder(tag_ids, image_embeds, tag_mask)
        logits = self.model.text_decoder(caption_ids, context, caption_mask)
        return self.cross_entropy(logits[:, :-1, :], targets[:, 1:])

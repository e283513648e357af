"""Losses of RAM / RAM++ training (recognize-anything): asymmetric tagging loss, CLIP distillation, and
:class:`TaggingWithLoss`, the cell joining them to a RAM / RAM++ model (as ``CLIPWithLoss`` does for CLIP).

Training loss, one graph per step::

    loss = ASL(γ− 7, γ+ 0, clip 0.05)(tag logits, multi-hot targets)              sum over batch and tags
         + L1(image_proj(pooled Swin token), teacher CLIP image feature)         mean    (distillation)
         + RAM++: ASL(γ− 4, γ+ 0, clip 0.05)(B×B alignment logits, identity)     sum     (alignment)

The alignment logits are the tagging head run with, as queries for every image, ReLU(wordvec_proj(t_j)) of
the B L2-normalised teacher text features t_j of the batch's captions; target: image i ↔ caption i.

Weights (``tagging.loss_weights``, :data:`LOSS_WEIGHTS` defaults reproduce the reference)::

    RAM++ / RAM without caption loss:  w_tag·loss_tag + w_dis·loss_dis + w_alignment·loss_alignment
    RAM with its caption loss:         w_t2t·loss_t2t + w_tag·loss_tag / sg(loss_tag / loss_t2t) + w_dis·loss_dis

(``sg``: no gradient; the tag loss is rescaled to the caption loss's magnitude, as recognize-anything does).
:class:`TaggingWithLoss` returns ``(total, parts)``: ``parts`` the unweighted terms named ``part_names``, for
the training log; only ``total`` is differentiated.
"""
import mindspore as ms
from mindspore import nn, ops

TAG_LOSS = {"gamma_neg": 7.0, "gamma_pos": 0.0, "clip": 0.05}
ALIGNMENT_LOSS = {"gamma_neg": 4.0, "gamma_pos": 0.0, "clip": 0.05}
#: weight of each term in the total (``tagging.loss_weights``); all 1: the reference's combination
LOSS_WEIGHTS = {"tag": 1.0, "dis": 1.0, "alignment": 1.0, "t2t": 1.0}


class AsymmetricLoss(nn.Cell):
    """ASL (Ridnik et al.) as recognize-anything computes it, summed over batch and classes.

    p = σ(x); p_neg = min(1 − p + clip, 1); L = y·log(max(p, eps)) + (1 − y)·log(max(p_neg, eps));
    focusing weight w = (1 − p_t)^(γ₊·y + γ₋·(1 − y)) with p_t = p·y + p_neg·(1 − y), no gradient
    through w; loss = −Σ L·w. RAM uses (γ₋ 7, γ₊ 0, clip 0.05) for tags and (4, 0, 0.05) for RAM++'s
    image-text alignment.
    """

    def __init__(self, gamma_neg=4.0, gamma_pos=1.0, clip=0.05, eps=1e-8):
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = float(gamma_neg), float(gamma_pos), clip, float(eps)

    def construct(self, logits, targets):
        targets = targets.astype(logits.dtype)
        p = ops.sigmoid(logits)
        p_neg = 1.0 - p
        if self.clip is not None and self.clip > 0:
            p_neg = ops.minimum(p_neg + self.clip, 1.0)
        loss = targets * ops.log(ops.maximum(p, self.eps)) + (1.0 - targets) * ops.log(ops.maximum(p_neg, self.eps))
        if self.gamma_neg > 0 or self.gamma_pos > 0:
            p_t = ops.stop_gradient(p * targets + p_neg * (1.0 - targets))
            gamma = self.gamma_pos * targets + self.gamma_neg * (1.0 - targets)
            loss = loss * ops.pow(1.0 - p_t, gamma)
        return -loss.sum()


class DistillationL1Loss(nn.Cell):
    """mean |student − teacher| (torch ``F.l1_loss``): RAM's distillation of the frozen CLIP image feature."""

    def construct(self, student, teacher):
        return ops.abs(student - ops.stop_gradient(teacher)).mean()


class TaggingWithLoss(nn.Cell):
    """RAM / RAM++ and its training losses in one cell: ``(pixel_values, labels[, teacher_image_features]
    [, teacher_text_features][, caption inputs]) → (total, parts)`` (module docstring). Parameter names stay the
    model's.

    ``weights``: a mapping over :data:`LOSS_WEIGHTS`' keys (missing keys: 1). ``caption_loss``: a cell
    ``(image_embeds, tag_ids, tag_mask, caption_ids, caption_mask, targets) → loss_t2t`` (RAM's caption
    generation, :class:`mindram.losses.caption_loss.CaptionLoss`), fed the last six inputs; None: no ``loss_t2t``.
    """

    def __init__(self, model, tag_loss=None, distillation=False, alignment=False, alignment_loss=None, weights=None,
                 caption_loss=None):
        super().__init__(auto_prefix=False)
        self.model = model
        self.tag_loss = tag_loss if tag_loss is not None else AsymmetricLoss(**TAG_LOSS)
        self.distillation, self.alignment = bool(distillation), bool(alignment)
        self.distillation_loss = DistillationL1Loss()
        self.alignment_loss = alignment_loss if alignment_loss is not None else AsymmetricLoss(**ALIGNMENT_LOSS)
        self.captioning = caption_loss is not None
        if self.captioning:
            self.caption_loss = caption_loss
        self.text_at = 1 if self.distillation else 0
        self.caption_at = self.text_at + (1 if self.alignment else 0)
        self.sum_scale = 1.0
        weights = {**LOSS_WEIGHTS, **(weights or {})}
        self.w_tag, self.w_dis = float(weights["tag"]), float(weights["dis"])
        self.w_alignment, self.w_t2t = float(weights["alignment"]), float(weights["t2t"])
        self.part_names = tuple(name for name, used in (("loss_tag", True), ("loss_dis", self.distillation),
                                                        ("loss_alignment", self.alignment),
                                                        ("loss_t2t", self.captioning)) if used)

    def gather_over_ranks(self, rank, world_size, **options):
        """Data parallel (``mindram.parallel.distribute_network``): the tag and alignment losses are *sums* over
        the batch (the reference's ASL), the distillation loss a mean; scaling the sums by ``world_size`` makes
        the ranks' gradient mean the gradient of the global batch (the alignment loss still pairs each rank's
        own images and captions). The logged parts carry the same scaling, so their mean over the ranks is the
        global batch's value."""
        del rank, options
        self.sum_scale = float(world_size)

    def alignment_logits(self, image_embeds, text_embeds):
        """(B, B) logits of every image against the B caption queries (the RAM++ forward, module docstring)."""
        queries = self.model.wordvec_proj(text_embeds) if self.model.has_wordvec_proj else text_embeds
        queries = ops.relu(queries)
        queries = ops.broadcast_to(queries[None], (image_embeds.shape[0],) + queries.shape)
        hidden = self.model.tagging_head(queries, self.model.image_proj(image_embeds))
        return self.model.fc(hidden).squeeze(-1)

    def construct(self, pixel_values, labels, *extra):
        image_embeds = self.model.visual_encoder(pixel_values)
        loss_tag = self.sum_scale * self.tag_loss(self.model.head_logits(image_embeds), labels)
        parts, total = [loss_tag], 0.0
        if self.distillation:
            loss_dis = self.distillation_loss(self.model.image_proj(image_embeds[:, 0, :]), extra[0])
            parts.append(loss_dis)
            total = total + self.w_dis * loss_dis
        if self.alignment:
            logits = self.alignment_logits(image_embeds, extra[self.text_at])
            loss_alignment = self.sum_scale * self.alignment_loss(
                logits, ops.eye(logits.shape[0], logits.shape[1], logits.dtype))
            parts.append(loss_alignment)
            total = total + self.w_alignment * loss_alignment
        tag_term = loss_tag
        if self.captioning:
            at = self.caption_at
            loss_t2t = self.caption_loss(self.model.image_proj(image_embeds), extra[at], extra[at + 1],
                                         extra[at + 2], extra[at + 3], extra[at + 4])
            parts.append(loss_t2t)
            total = total + self.w_t2t * loss_t2t
            tag_term = loss_tag / ops.stop_gradient(loss_tag / loss_t2t)   # the caption loss's magnitude
        total = total + self.w_tag * tag_term
        return total, ops.stack([part.astype(ms.float32) for part in parts])

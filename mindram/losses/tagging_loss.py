"""Losses of RAM / RAM++ training (recognize-anything): asymmetric tagging loss and CLIP distillation."""
from mindspore import nn, ops


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

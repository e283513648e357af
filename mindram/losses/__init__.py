"""Losses, kept apart from the models and joined to them by task cells."""
from .caption_loss import CaptionLoss, LabelSmoothedCrossEntropy
from .clip_loss import ClipLoss, CLIPWithLoss
from .tagging_loss import ALIGNMENT_LOSS, TAG_LOSS, AsymmetricLoss, DistillationL1Loss, TaggingWithLoss

__all__ = ["ALIGNMENT_LOSS", "AsymmetricLoss", "CaptionLoss", "ClipLoss", "CLIPWithLoss", "DistillationL1Loss",
           "LabelSmoothedCrossEntropy", "TAG_LOSS", "TaggingWithLoss"]

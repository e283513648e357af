"""Losses, kept apart from the models and joined to them by task cells."""
from .clip_loss import ClipLoss, CLIPWithLoss
from .tagging_loss import AsymmetricLoss, DistillationL1Loss

__all__ = ["AsymmetricLoss", "ClipLoss", "CLIPWithLoss", "DistillationL1Loss"]

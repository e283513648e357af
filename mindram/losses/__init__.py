"""Losses, kept apart from the models and joined to them by task cells."""
from .clip_loss import ClipLoss, CLIPWithLoss

__all__ = ["ClipLoss", "CLIPWithLoss"]

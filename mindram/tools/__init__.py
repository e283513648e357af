"""MindFormers-compatible helpers (``mindformers.tools``): :func:`~mindram.tools.image_tools.load_image`."""
from .image_tools import load_image

__all__ = ["load_image"]

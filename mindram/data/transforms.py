"""Per-sample image transforms of the data pipeline (PIL + numpy, seeded per sample).

* :class:`EvalTransform` — the processor's eval transform (Resize + CenterCrop + Normalize), no randomness.
* :class:`TrainTransform` — open_clip's train transform without colour jitter/grayscale:
  ``RandomResizedCrop(S, scale=(0.9, 1.0), ratio=(3/4, 4/3), bicubic) -> RGB -> ToTensor -> Normalize``,
  with torchvision's ``RandomResizedCrop.get_params`` algorithm driven by a numpy ``Generator`` that the
  pipeline seeds from (seed, epoch, index) — so augmentations are reproducible and resume-exact, whatever
  the worker scheduling.
"""
import math
from typing import Tuple

import numpy as np

from ..errors import ConfigError
from ..models.clip.image_processing import CLIPImageProcessor, _INTERPOLATIONS

__all__ = ["EvalTransform", "TrainTransform", "random_resized_crop_params"]


def random_resized_crop_params(width: int, height: int, scale: Tuple[float, float],
                               ratio: Tuple[float, float], rng: np.random.Generator) -> Tuple[int, int, int, int]:
    """torchvision ``RandomResizedCrop.get_params``: ``(top, left, h, w)`` of the crop box."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height  # fallback: central crop at the nearest allowed aspect ratio
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class EvalTransform:
    """``image, rng -> float32 (3, S, S)`` with the processor's deterministic eval preprocessing."""

    def __init__(self, image_processor: CLIPImageProcessor):
        self.image_processor = image_processor
        self.image_size = image_processor.image_size

    def __call__(self, image, rng: np.random.Generator = None) -> np.ndarray:
        return self.image_processor.preprocess(image)


class TrainTransform:
    """open_clip train transform (RandomResizedCrop + Normalize) using the processor's size, mean, std and
    interpolation; inputs are loaded exactly like the processor loads them (paths, PIL images, arrays).

    Args:
        image_processor: gives ``image_size``, ``mean``, ``std``, ``interpolation`` and the input loading.
        scale: crop area range as a fraction of the image (open_clip: ``(0.9, 1.0)``).
        ratio: crop aspect-ratio range (torchvision default ``(3/4, 4/3)``).
    """

    def __init__(self, image_processor: CLIPImageProcessor, scale: Tuple[float, float] = (0.9, 1.0),
                 ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)):
        scale, ratio = tuple(float(s) for s in scale), tuple(float(r) for r in ratio)
        if len(scale) != 2 or not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ConfigError(f"scale must be (lo, hi) with 0 < lo <= hi <= 1, got {scale}")
        if len(ratio) != 2 or not 0.0 < ratio[0] <= ratio[1]:
            raise ConfigError(f"ratio must be (lo, hi) with 0 < lo <= hi, got {ratio}")
        self.image_processor = image_processor
        self.image_size = image_processor.image_size
        self.scale, self.ratio = scale, ratio
        self._resample = _INTERPOLATIONS[image_processor.interpolation]

    def __call__(self, image, rng: np.random.Generator) -> np.ndarray:
        img = self.image_processor._load(image)  # pylint: disable=protected-access  # same input rules
        top, left, h, w = random_resized_crop_params(img.width, img.height, self.scale, self.ratio, rng)
        s = self.image_size
        img = img.crop((left, top, left + w, top + h))
        if img.size != (s, s):
            img = img.resize((s, s), self._resample)
        return self.image_processor.to_normalized_array(img)

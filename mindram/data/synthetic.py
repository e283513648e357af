"""Procedural image-caption data for tests and quick training runs: coloured shapes on a noisy background.

Design (chosen to be learnable by a tiny CLIP in minutes of CPU training at 32-64 px):

* 8 well-separated colours x 4 shapes = **32 classes** (label = ``colour * num_shapes + shape``, class name
  ``"red circle"``). Chance is 1/32; a model that only learns colour already reaches 1/4 zero-shot top-1, so
  the ">= 3x chance" target does not need perfect shape recognition. ``colours=``/``shapes=`` select subsets.
* one shape per image, two sizes (small / large), five positions (left, right, top, bottom, center) with small
  jitter; drawn 2x supersampled (anti-aliased edges), shape colour jittered by +-12 per channel;
* background: a grey level in [75, 170] with a slight tint and a linear gradient, plus Gaussian noise
  (sigma 5) over the whole image — never close enough to a palette colour to hide the shape;
* captions mix six templates, all naming colour and shape (e.g. "a large red circle on the left",
  "a photo of a red circle"), so CLIP zero-shot prompts ("a photo of a {}.") are in-distribution.

Measured (2 CPU cores, MindSpore 2.10): a CLIP with 3-layer, 96-wide towers (ViT patch 8 at 32 px, context 16),
batch 128 with the train transform, AdamWeightDecay lr 3e-4 after a 50-step linear warmup, reached 87.5%
zero-shot top-1 ("a photo of a {}.") on 1,024 test images after 205 steps / 2.5 min (chance 3.1%; the predicted
colour was right for 99.9%). Without warmup (lr 5e-4 or 1e-3) the same model collapsed to the uniform loss
ln(128) within 20 steps — use a warmup.

Every item is generated on the fly from ``SeedSequence([seed, split_id, index])``: the same (seed, split, index)
always gives identical pixels, and the train (split_id 0) and test (split_id 1) random streams are disjoint.
"""
import logging
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..errors import ConfigError
from .base import Record, RecordSource, check_split

logger = logging.getLogger(__name__)

__all__ = ["SyntheticCaptions"]

COLOURS = {
    "red": (220, 30, 30), "green": (40, 170, 40), "blue": (40, 70, 225), "yellow": (240, 220, 40),
    "purple": (140, 50, 180), "orange": (250, 140, 20), "white": (248, 248, 248), "black": (18, 18, 18),
}
SHAPES = ("circle", "square", "triangle", "cross")
# position name -> (centre x, centre y) as a fraction of the side, and its caption phrase
POSITIONS = {"left": ((0.28, 0.5), "on the left"), "right": ((0.72, 0.5), "on the right"),
             "top": ((0.5, 0.28), "at the top"), "bottom": ((0.5, 0.72), "at the bottom"),
             "center": ((0.5, 0.5), "in the center")}
SIZES = {"small": 0.15, "large": 0.25}  # half-extent as a fraction of the side
TEMPLATES = ("a {size} {colour} {shape} {where}", "a {colour} {shape} {where}", "a {size} {colour} {shape}",
             "a {colour} {shape}", "a photo of a {colour} {shape}", "a photo of a {size} {colour} {shape} {where}")
_SPLIT_IDS = {"train": 0, "test": 1}
_SUPERSAMPLE = 2


def _draw_mask(shape: str, side: int, cx: float, cy: float, r: float) -> np.ndarray:
    """Anti-aliased coverage mask in [0, 1] of one shape, shape (side, side)."""
    k = _SUPERSAMPLE
    big = Image.new("L", (side * k, side * k), 0)
    draw = ImageDraw.Draw(big)
    cx, cy, r = cx * k, cy * k, r * k
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape == "square":
        h = 0.88 * r
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=255)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - 0.95 * r, cy + 0.8 * r), (cx + 0.95 * r, cy + 0.8 * r)], fill=255)
    elif shape == "cross":
        t = 0.32 * r
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=255)
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=255)
    else:  # pragma: no cover - guarded by the constructor
        raise ConfigError(f"unknown shape {shape!r}")
    small = big.resize((side, side), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


class SyntheticCaptions(RecordSource):
    """Deterministic synthetic caption/classification source (see module docstring for the design).

    Args:
        num_samples: number of records.
        image_size: side of the generated square uint8 RGB images.
        seed: base seed; (seed, split, index) fully determines a record.
        split: "train" or "test" (disjoint random streams).
        colours, shapes: subsets of ``COLOURS``/``SHAPES`` (default: all 8 x 4 = 32 classes).

    Records: ``(uint8 (S, S, 3) array, caption, label)``; ``class_names[label]`` is e.g. ``"red circle"``.
    """

    def __init__(self, num_samples: int, image_size: int = 64, seed: int = 0, split: str = "train",
                 colours: Optional[Sequence[str]] = None, shapes: Optional[Sequence[str]] = None):
        super().__init__()
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples <= 0:
            raise ConfigError(f"num_samples must be a positive int, got {num_samples!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 16:
            raise ConfigError(f"image_size must be an int >= 16, got {image_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
        self.split = check_split(split, tuple(_SPLIT_IDS))
        self.num_samples, self.image_size, self.seed = int(num_samples), int(image_size), int(seed)
        self.colours = list(COLOURS) if colours is None else list(colours)
        self.shapes = list(SHAPES) if shapes is None else list(shapes)
        bad = [c for c in self.colours if c not in COLOURS] + [s for s in self.shapes if s not in SHAPES]
        if bad or not self.colours or not self.shapes:
            raise ConfigError(f"unknown or empty colours/shapes {bad}; choose from {list(COLOURS)} and {list(SHAPES)}")

    @property
    def class_names(self) -> List[str]:  # type: ignore[override]
        """``"<colour> <shape>"`` for every label, colour-major."""
        return [f"{c} {s}" for c in self.colours for s in self.shapes]

    def __len__(self) -> int:
        return self.num_samples

    def max_captions(self) -> int:
        return 0

    def __getitem__(self, index: int) -> Record:
        index = int(index)
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _SPLIT_IDS[self.split], index]))
        ci, si = int(rng.integers(len(self.colours))), int(rng.integers(len(self.shapes)))
        size = ("small", "large")[int(rng.integers(2))]
        pos = list(POSITIONS)[int(rng.integers(len(POSITIONS)))]
        template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        colour, shape = self.colours[ci], self.shapes[si]
        caption = template.format(size=size, colour=colour, shape=shape, where=POSITIONS[pos][1])
        return Record(self._render(rng, colour, shape, size, pos), caption, ci * len(self.shapes) + si)

    def _render(self, rng: np.random.Generator, colour: str, shape: str, size: str, pos: str) -> np.ndarray:
        side = self.image_size
        # background: grey + tint + linear gradient in a random direction
        grey = rng.uniform(75.0, 170.0)
        tint = rng.uniform(-10.0, 10.0, size=3)
        angle = rng.uniform(0.0, 2.0 * np.pi)
        yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / (side - 1) - 0.5
        gradient = (np.cos(angle) * xx + np.sin(angle) * yy) * rng.uniform(0.0, 30.0)
        bg = grey + tint[None, None, :] + gradient[:, :, None]
        # shape
        (fx, fy), _ = POSITIONS[pos]
        cx = (fx + rng.uniform(-0.04, 0.04)) * side
        cy = (fy + rng.uniform(-0.04, 0.04)) * side
        r = SIZES[size] * rng.uniform(0.9, 1.1) * side
        rgb = np.clip(np.asarray(COLOURS[colour], np.float32) + rng.uniform(-12.0, 12.0, size=3), 0, 255)
        alpha = _draw_mask(shape, side, cx, cy, r)[:, :, None]
        img = bg * (1.0 - alpha) + rgb[None, None, :] * alpha
        img += rng.normal(0.0, 5.0, size=img.shape)
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)

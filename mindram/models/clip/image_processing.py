"""CLIP eval-time image preprocessing with PIL + numpy, matching open_clip 3.3.0's eval transform.

Reference pipeline (``open_clip.image_transform(S, is_train=False)``, torchvision PIL backend)::

    shortest: Resize(S) -> CenterCrop(S) -> convert('RGB') -> ToTensor -> Normalize
    longest:  ResizeKeepRatio(S, longest=1) -> CenterCropOrPad(S, fill) -> ...same tail
    squash:   Resize((S, S)) -> ...same tail

Resizing and cropping run on the image *in its original PIL mode* (before ``convert('RGB')``), so PIL's
mode-specific behaviour is part of the reference: '1' and 'P' always resize with NEAREST, 'RGBA'/'LA' resize
premultiplied by alpha, 'L' stays single-channel, and pads use each mode's own 0 (CMYK 0 is white, 'P' 0 is
palette entry 0). We replay the same PIL calls in the same order, so every 8-bit mode matches bit for bit.

Deliberate departures from the reference (each documented on :class:`CLIPImageProcessor`):
  * 16-bit / 32-bit data: PIL's convert('RGB') clips these to 255 (almost all white). Instead 'I;16*'
    images and uint16 arrays are 16-bit data scaled by value/257 (rounded) to 8-bit 'L'; 'I' images must
    hold 0..65535 and are treated the same; 'F' images are float data like float arrays: values in [0, 1]
    become rint(x * 255). Out-of-range data is a DataError, never clipped silently.
  * ``alpha_background`` (opt-in): composite transparent images onto a colour; the default (None) keeps the
    reference behaviour of dropping alpha (after a premultiplied resize, fully transparent pixels are black).
  * ``apply_exif_orientation`` (opt-in): the reference ignores EXIF orientation; default False matches it.
  * The pixel budget (:mod:`mindram.utils.image_files`, docs/limits.md#images): an image of more than
    ``max_pixels`` pixels (default ``$MINDRAM_MAX_IMAGE_PIXELS`` or 25,000,000), as stored or as resized here
    (a 1 x 200,000 strip resized shortest side to 224 would be 224 x 44.8 M), is a DataError, checked from the
    file's header before anything is decoded. The reference resizes the same way; it is a refusal, not a
    numerical change. Files are read only if they are regular files (a FIFO is a DataError, not a hang).
"""
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageOps

from ...errors import ConfigError, DataError
from ...tools.image_tools import is_url, open_url
from ...utils.image_files import check_pixel_budget, max_image_pixels, read_image
from ..image_processing_utils import BaseImageProcessor
from .configuration import CLIPConfig

logger = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

_INTERPOLATIONS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
_RESIZE_MODES = ("shortest", "longest", "squash")
_HIGH_BIT_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")
_UINT16_MAX = 65535
_ACCEPTED_TYPES = "PIL.Image.Image, numpy.ndarray, str, os.PathLike, or a list/tuple of these"
_ACCEPTED_SHAPES = "(H, W) or (H, W, C) with C in {1, 2, 3, 4}"
_DICT_KEYS = ("image_size", "mean", "std", "interpolation", "resize_mode", "fill_color",
              "apply_exif_orientation", "alpha_background", "max_pixels")

ImageInput = Union[Image.Image, np.ndarray, str, os.PathLike]


def _to_uint8_16bit(arr: np.ndarray) -> np.ndarray:
    """Scale 16-bit data (0..65535) to uint8 by value/257, rounded: ``(v + 128) // 257`` in integers, which is
    exact (v/257 is never halfway between two integers, 257 being odd) and costs 4 bytes a pixel, not float64's
    three 8-byte temporaries."""
    wide = np.asarray(arr).astype(np.uint32)
    wide += 128
    wide //= 257
    return wide.astype(np.uint8)


def _array_to_pil(arr: np.ndarray) -> Image.Image:
    """Convert a numpy image to PIL (see CLIPImageProcessor for the dtype rules)."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (2, 3, 4))) or 0 in arr.shape:
        raise DataError(f"numpy image has unsupported shape {arr.shape}; accepted shapes: {_ACCEPTED_SHAPES} "
                        "with H, W > 0 (CHW arrays must be transposed to HWC; pass a batch as a list)")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        arr = _to_uint8_16bit(arr)
    elif np.issubdtype(arr.dtype, np.floating):
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise DataError(f"float numpy image must hold values in [0, 1]; got range [{lo}, {hi}] "
                            "(pass uint8 for 0..255 data or uint16 for 0..65535 data)")
        arr = np.rint(arr.astype(np.float64) * 255.0).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.uint8:
        lo, hi = int(np.min(arr)), int(np.max(arr))
        if lo < 0 or hi > 255:
            raise DataError(f"integer numpy image of dtype {arr.dtype} must hold values in [0, 255]; got range "
                            f"[{lo}, {hi}] (use uint16 for 16-bit data)")
        arr = arr.astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise DataError(f"numpy image has unsupported dtype {arr.dtype}; "
                        "accepted: uint8, uint16, bool, float in [0, 1]")
    return Image.fromarray(np.ascontiguousarray(arr))


def _high_bit_to_8bit(image: Image.Image) -> Image.Image:
    """An 'I;16*', 'I' or 'F' image as 8-bit 'L' by the numpy rules: 16-bit data / 257, float data * 255."""
    arr = np.asarray(image)
    if image.mode == "I":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > _UINT16_MAX:
            raise DataError(f"PIL mode 'I' image must hold 16-bit values in [0, {_UINT16_MAX}]; got range [{lo}, {hi}] "
                            "(rescale it, or pass a float array in [0, 1])")
    if image.mode != "F":
        arr = arr.astype(np.uint16)  # 'I;16B' arrives big-endian
    try:
        return _array_to_pil(arr)
    except DataError as e:
        raise DataError(f"PIL mode {image.mode!r} image: {e}") from None


def _open_path(path: Union[str, os.PathLike], apply_exif: bool, check_size) -> Image.Image:
    """Open and fully decode an image file or URL once ``check_size(width, height)`` accepted its header size;
    missing -> FileNotFoundError, not a regular file, undecodable or refused -> DataError."""
    path_str = os.fspath(path)
    if is_url(path_str):
        image = open_url(path_str, check_size=check_size)
        return ImageOps.exif_transpose(image) if apply_exif else image
    return read_image(path_str, check_size, apply_exif)


def _pad(img: Image.Image, ltrb: List[int], fill: int) -> Image.Image:
    """torchvision's PIL constant pad: per-mode fill, 'P' keeps its palette."""
    n = len(img.getbands())
    fill_value: Any = tuple([int(fill)] * n) if n > 1 else int(fill)
    if img.mode == "P":
        palette = img.getpalette()
        out = ImageOps.expand(img, border=tuple(ltrb), fill=fill_value)
        out.putpalette(palette)
        return out
    return ImageOps.expand(img, border=tuple(ltrb), fill=fill_value)


def _center_crop_or_pad(img: Image.Image, size: int, fill: int) -> Image.Image:
    """torchvision center_crop / open_clip center_crop_or_pad on a PIL image."""
    w, h = img.size
    if size > w or size > h:
        ltrb = [(size - w) // 2 if size > w else 0, (size - h) // 2 if size > h else 0,
                (size - w + 1) // 2 if size > w else 0, (size - h + 1) // 2 if size > h else 0]
        img = _pad(img, ltrb, fill)
        w, h = img.size
        if (w, h) == (size, size):
            return img
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


class CLIPImageProcessor(BaseImageProcessor):
    """Eval-time CLIP preprocessing, identical to open_clip 3.3.0's ``image_transform(..., is_train=False)``.

    ``CLIPImageProcessor.from_pretrained("clip_vit_h_14.dfn5b")`` is the preprocessing of those weights (the
    architecture's image size and the catalog's mean/std/resize mode); ``CLIPImageProcessor(image_size=224)``
    is OpenAI's, which is wrong for weights the catalog gives other statistics or a squash resize.

    Args:
        image_size: output side S; the result is ``(3, S, S)`` per image.
        mean, std: per-channel normalisation (a scalar is repeated for the 3 channels).
        interpolation: "bicubic" or "bilinear" (the modes open_clip supports; PIL always antialiases).
        resize_mode: "shortest" (short side -> S, long side ``int(S * long / short)``, centre crop),
            "longest" (long side -> S with ``round(side / ratio)``, centred pad with ``fill_color``) or
            "squash" (resize straight to S x S).
        apply_exif_orientation: apply ``PIL.ImageOps.exif_transpose`` to files and PIL images. The reference
            (``Image.open`` + open_clip) ignores EXIF orientation, so the default False matches it.
        alpha_background: None (default, reference behaviour: alpha is dropped by ``convert('RGB')``; fully
            transparent pixels come out black where PIL resized RGBA/LA premultiplied, else they show the colour
            stored under them) or an ``(r, g, b)`` colour onto which images with alpha (RGBA, LA, PA,
            transparent P...) are composited first.
        fill_color: pad value for resize_mode "longest" (open_clip's ``PreprocessCfg.fill_color``).
        max_pixels: the pixel budget of one image, as stored and as resized (None, the default:
            ``$MINDRAM_MAX_IMAGE_PIXELS`` or 25,000,000 when the image is read); a larger image is a DataError
            naming it, found from a file's header before it is decoded. Not part of :meth:`to_dict` unless set.

    Inputs: a PIL image, a numpy array, a file path (str / PathLike), or a list/tuple mixing these.
    Numpy rules: shapes (H, W) or (H, W, C) with C in {1, 2, 3, 4} (L, LA, RGB, RGBA); uint8 is used as is;
    uint16 is 16-bit data scaled by 1/257 (rounded); float arrays must lie in [0, 1] and become
    ``rint(x * 255)``; bool becomes 0/255; other integer dtypes must lie in [0, 255].
    PIL images of every 8-bit mode follow the reference exactly (resize/crop in the original mode, then
    ``convert('RGB')``). Deliberate difference: 16/32-bit modes ('I;16', 'I;16B', 'I', 'F') are clipped to 255
    by the reference's ``convert('RGB')``; here they follow the numpy rules: 'I;16*' and 'I' are 16-bit data
    (0..65535, 'I' outside that range is a DataError) scaled by 1/257 to 'L'; 'F' is float data that must lie
    in [0, 1] and becomes ``rint(x * 255)``, like a float array.
    """

    config_class = CLIPConfig

    def __init__(self, image_size: int = 224, mean: Union[float, Sequence[float]] = OPENAI_MEAN,
                 std: Union[float, Sequence[float]] = OPENAI_STD, interpolation: str = "bicubic",
                 resize_mode: str = "shortest", apply_exif_orientation: bool = False,
                 alpha_background: Optional[Tuple[int, int, int]] = None, fill_color: int = 0,
                 max_pixels: Optional[int] = None):
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size <= 0:
            raise ConfigError(f"image_size must be a positive int, got {image_size!r}")
        if interpolation not in _INTERPOLATIONS:
            raise ConfigError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {interpolation!r}")
        if resize_mode not in _RESIZE_MODES:
            raise ConfigError(f"resize_mode must be one of {_RESIZE_MODES}, got {resize_mode!r}")
        mean = tuple(float(m) for m in mean) if isinstance(mean, (list, tuple)) else (float(mean),) * 3
        std = tuple(float(s) for s in std) if isinstance(std, (list, tuple)) else (float(std),) * 3
        if len(mean) != 3 or len(std) != 3 or any(s == 0 for s in std):
            raise ConfigError(f"mean and std must have 3 values with non-zero std, got mean={mean}, std={std}")
        if alpha_background is not None:
            if len(alpha_background) != 3 or not all(0 <= int(c) <= 255 for c in alpha_background):
                raise ConfigError(f"alpha_background must be None or an (r, g, b) of 0..255, got {alpha_background!r}")
            alpha_background = tuple(int(c) for c in alpha_background)
        self.image_size = int(image_size)
        self.mean, self.std = mean, std
        self.interpolation = interpolation
        self.resize_mode = resize_mode
        self.apply_exif_orientation = bool(apply_exif_orientation)
        self.alpha_background = alpha_background
        self.fill_color = int(fill_color)
        self.max_pixels = None if max_pixels is None else max_image_pixels(max_pixels)
        self._mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self._std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    def to_dict(self) -> Dict[str, Any]:
        """Constructor arguments as a plain (YAML-friendly) dict."""
        d = {k: getattr(self, k) for k in _DICT_KEYS if k != "max_pixels" or self.max_pixels is not None}
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if self.alpha_background is not None:
            d["alpha_background"] = list(self.alpha_background)
        return d

    @classmethod
    def from_dict(cls, cfg: Dict[str, Any]) -> "CLIPImageProcessor":
        """Build from a dict with keys among ``image_size, mean, std, interpolation, resize_mode, fill_color,
        apply_exif_orientation, alpha_background, max_pixels``; unknown keys raise ConfigError."""
        unknown = sorted(set(cfg) - set(_DICT_KEYS))
        if unknown:
            raise ConfigError(f"unknown image processor key(s) {unknown}; allowed: {list(_DICT_KEYS)}")
        return cls(**cfg)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"

    def check_size(self, width: int, height: int, what: str) -> None:
        """DataError naming ``what`` when a ``width x height`` image is over the pixel budget, as it is or as
        this processor would resize it (:attr:`max_pixels`)."""
        check_pixel_budget(width, height, what, self.max_pixels)
        if width > 0 and height > 0:
            resized = self._resized_size(width, height)
            stage = f"{width}x{height} resized ({self.resize_mode}, image_size {self.image_size}) to"
            if min(resized) < 1:   # "longest" rounds the short side of a thin strip to 0 pixels
                raise DataError(f"{what}: {stage} {resized[0]}x{resized[1]}, an empty image; its aspect ratio is too "
                                f"extreme for resize_mode {self.resize_mode!r} (crop it first)")
            check_pixel_budget(*resized, what, self.max_pixels, stage=stage)

    def _load(self, image: ImageInput) -> Image.Image:
        """Turn one input into a PIL image in a mode the reference pipeline handles (pixel budget checked first)."""
        if isinstance(image, Image.Image):
            self.check_size(image.width, image.height, "PIL image")
            if self.apply_exif_orientation:
                image = ImageOps.exif_transpose(image)
        elif isinstance(image, np.ndarray):
            if image.ndim in (2, 3):
                self.check_size(image.shape[1], image.shape[0], f"numpy image {image.shape}")
            image = _array_to_pil(image)
        elif isinstance(image, (str, os.PathLike)):
            what = os.fspath(image)
            image = _open_path(image, self.apply_exif_orientation, lambda w, h: self.check_size(w, h, what))
        else:
            raise TypeError(f"unsupported image type {type(image).__name__}; expected {_ACCEPTED_TYPES}")
        if image.width == 0 or image.height == 0:
            raise DataError(f"image has empty size {image.size}")
        if image.mode in _HIGH_BIT_MODES:
            logger.debug("scaling %s-mode image to 8-bit 'L'", image.mode)
            image = _high_bit_to_8bit(image)
        if self.alpha_background is not None and (
                any(b in ("A", "a") for b in image.getbands()) or "transparency" in image.info):
            background = Image.new("RGBA", image.size, self.alpha_background + (255,))
            image = Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
        return image

    def _resized_size(self, w: int, h: int) -> Tuple[int, int]:
        """``(width, height)`` of a ``w x h`` image after this processor's resize (before the crop or pad)."""
        s = self.image_size
        if self.resize_mode == "shortest":
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(s * long / short)
            return (s, new_long) if w <= h else (new_long, s)
        if self.resize_mode == "longest":
            ratio = max(h / s, w / s)
            return round(w / ratio), round(h / ratio)
        return s, s

    def _resize_crop(self, img: Image.Image) -> Image.Image:
        """Resize + crop/pad in the image's own mode, exactly as torchvision's PIL path does."""
        s, resample = self.image_size, _INTERPOLATIONS[self.interpolation]
        w, h = img.size
        size = self._resized_size(w, h)
        if size != (w, h):
            img = img.resize(size, resample)
        if self.resize_mode == "squash":
            return img
        return _center_crop_or_pad(img, s, self.fill_color if self.resize_mode == "longest" else 0)

    def preprocess(self, image: ImageInput) -> np.ndarray:
        """Preprocess one image into a float32 ``(3, S, S)`` array."""
        return self.to_normalized_array(self._resize_crop(self._load(image)))

    def to_normalized_array(self, img: Image.Image) -> np.ndarray:
        """An already resized/cropped PIL image → RGB → [0, 1] → ``(x - mean) / std``, float32 ``(3, H, W)``."""
        try:
            rgb = img.convert("RGB")
        except ValueError as e:
            raise DataError(f"cannot convert PIL mode {img.mode!r} to RGB: {e}") from e
        chw = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
        return (chw - self._mean) / self._std

    def __call__(self, images: Union[ImageInput, Sequence[ImageInput]]) -> np.ndarray:
        """Preprocess one image or a list/tuple of images into a float32 ``(N, 3, S, S)`` batch."""
        if isinstance(images, (list, tuple)):
            if len(images) == 0:
                raise DataError("empty image list: expected at least one image")
            return np.stack([self.preprocess(im) for im in images])
        return self.preprocess(images)[None]

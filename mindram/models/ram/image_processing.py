"""RAM / RAM++ inference preprocessing (reference ``ram/transform.py:get_transform``).

``convert("RGB")`` → PIL bilinear (antialiased) resize straight to S×S (aspect ratio not kept) →
/255 → ImageNet mean/std. This is :class:`CLIPImageProcessor` in ``squash`` mode with bilinear
interpolation and ImageNet statistics, except for one ordering detail: RAM converts to RGB
*before* resizing (CLIP resizes in the image's own mode), which matters for palette, grey and
alpha images.
"""
from ...errors import ConfigError
from ..clip.image_processing import CLIPImageProcessor
from .configuration import RAMConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RAMImageProcessor(CLIPImageProcessor):
    """``RAMImageProcessor(image_size=384)(images)`` → float32 (N, 3, S, S); inputs as for CLIPImageProcessor.
    ``RAMImageProcessor.from_pretrained("ram_plus_swin_l_384")`` takes the size from the model's config."""

    config_class = RAMConfig

    def __init__(self, image_size=384, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear",
                 resize_mode="squash", apply_exif_orientation=False, alpha_background=None, fill_color=0,
                 max_pixels=None):
        if resize_mode != "squash":
            raise ConfigError(f"RAMImageProcessor: resize_mode must be 'squash' (the reference resizes to S x S), "
                              f"got {resize_mode!r}")
        super().__init__(image_size=image_size, mean=mean, std=std, interpolation=interpolation,
                         resize_mode=resize_mode, apply_exif_orientation=apply_exif_orientation,
                         alpha_background=alpha_background, fill_color=fill_color, max_pixels=max_pixels)

    @classmethod
    def for_config(cls, config, name=None, **overrides):
        """As :meth:`BaseImageProcessor.for_config`; an ``image_size`` other than the config's is allowed (the
        Swin runs any multiple of its patch size, docs/ram.md#input-resolution) and checked here."""
        processor = super().for_config(config, name, **overrides)
        swin = getattr(config, "swin_config", None)
        if swin is not None:
            try:
                swin.check_input_size(processor.image_size)
            except ValueError as e:
                raise ConfigError(f"RAMImageProcessor image_size={processor.image_size}: {e}") from e
        return processor

    def _load(self, image):
        return super()._load(image).convert("RGB")

"""CLIP: configuration, model, tokenizer, image processor, weight conversion."""
from ...utils.lazy import lazy_exports

_EXPORTS = {
    "CLIPConfig": ".configuration", "CLIPTextConfig": ".configuration", "CLIPVisionConfig": ".configuration",
    "CLIPImageProcessor": ".image_processing",
    "CLIPModel": ".modeling", "TextTransformer": ".modeling", "VisionTransformer": ".modeling",
    "CLIPTokenizer": ".tokenizer", "tokenize": ".tokenizer",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["CLIPConfig", "CLIPTextConfig", "CLIPVisionConfig", "CLIPImageProcessor", "CLIPModel",
           "TextTransformer", "VisionTransformer", "CLIPTokenizer", "tokenize"]


def register():
    """Register the family's buildable classes (the registry calls this before its first lookup)."""
    from ...registry import MindFormerModuleType, MindFormerRegister  # pylint: disable=import-outside-toplevel
    MindFormerRegister.register_cls(__getattr__("CLIPModel"), MindFormerModuleType.MODELS)
    MindFormerRegister.register_cls(__getattr__("CLIPConfig"), MindFormerModuleType.CONFIG)
    MindFormerRegister.register_cls(__getattr__("CLIPTokenizer"), MindFormerModuleType.TOKENIZER)
    MindFormerRegister.register_cls(__getattr__("CLIPImageProcessor"), MindFormerModuleType.PROCESSOR)

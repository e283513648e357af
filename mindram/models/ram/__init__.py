"""RAM / RAM++ (recognize-anything): configuration, models, tagging head, open set, weight conversion."""
from ...utils.lazy import lazy_exports

_EXPORTS = {
    "BertTokenizer": ".bert_tokenizer",
    "BertConfig": ".configuration", "RAMConfig": ".configuration",
    "RAMImageProcessor": ".image_processing",
    "RAM": ".modeling", "RAMBase": ".modeling", "RAMPlus": ".modeling", "RAMTaggingHead": ".modeling",
    "model_class_for": ".modeling",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["BertConfig", "BertTokenizer", "RAMConfig", "RAMImageProcessor", "RAM", "RAMBase", "RAMPlus",
           "RAMTaggingHead", "model_class_for"]


def register():
    """Register the family's buildable classes (the registry calls this before its first lookup)."""
    from ...registry import MindFormerModuleType, MindFormerRegister  # pylint: disable=import-outside-toplevel
    MindFormerRegister.register_cls(__getattr__("RAM"), MindFormerModuleType.MODELS)
    MindFormerRegister.register_cls(__getattr__("RAMPlus"), MindFormerModuleType.MODELS)
    MindFormerRegister.register_cls(__getattr__("RAMConfig"), MindFormerModuleType.CONFIG)
    MindFormerRegister.register_cls(__getattr__("RAMImageProcessor"), MindFormerModuleType.PROCESSOR)

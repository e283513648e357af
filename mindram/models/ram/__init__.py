"""RAM / RAM++ (recognize-anything): configuration, models, tagging head, open set, weight conversion."""
from .bert_tokenizer import BertTokenizer
from .configuration import BertConfig, RAMConfig
from .image_processing import RAMImageProcessor
from .modeling import RAM, RAMBase, RAMPlus, RAMTaggingHead, model_class_for

__all__ = ["BertConfig", "BertTokenizer", "RAMConfig", "RAMImageProcessor", "RAM", "RAMBase", "RAMPlus",
           "RAMTaggingHead", "model_class_for"]

from ...registry import MindFormerModuleType, MindFormerRegister  # noqa: E402

MindFormerRegister.register_cls(RAM, MindFormerModuleType.MODELS)
MindFormerRegister.register_cls(RAMPlus, MindFormerModuleType.MODELS)
MindFormerRegister.register_cls(RAMConfig, MindFormerModuleType.CONFIG)
MindFormerRegister.register_cls(RAMImageProcessor, MindFormerModuleType.PROCESSOR)

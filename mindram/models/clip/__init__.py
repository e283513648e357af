"""CLIP: configuration, model, tokenizer, image processor, weight conversion."""
from .configuration import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from .image_processing import CLIPImageProcessor
from .modeling import CLIPModel, TextTransformer, VisionTransformer
from .tokenizer import CLIPTokenizer, tokenize

__all__ = ["CLIPConfig", "CLIPTextConfig", "CLIPVisionConfig", "CLIPImageProcessor", "CLIPModel",
           "TextTransformer", "VisionTransformer", "CLIPTokenizer", "tokenize"]

from ...registry import MindFormerModuleType, MindFormerRegister  # noqa: E402

MindFormerRegister.register_cls(CLIPModel, MindFormerModuleType.MODELS)
MindFormerRegister.register_cls(CLIPConfig, MindFormerModuleType.CONFIG)
MindFormerRegister.register_cls(CLIPTokenizer, MindFormerModuleType.TOKENIZER)
MindFormerRegister.register_cls(CLIPImageProcessor, MindFormerModuleType.PROCESSOR)

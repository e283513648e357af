"""CLIP: configuration, model, tokenizer, image processor, weight conversion."""
from .configuration import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from .image_processing import CLIPImageProcessor
from .modeling import CLIPModel, TextTransformer, VisionTransformer
from .tokenizer import CLIPTokenizer, tokenize

__all__ = ["CLIPConfig", "CLIPTextConfig", "CLIPVisionConfig", "CLIPImageProcessor", "CLIPModel",
           "TextTransformer", "VisionTransformer", "CLIPTokenizer", "tokenize"]

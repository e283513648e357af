"""Model families of mindram."""
from .clip import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer, tokenize

__all__ = ["CLIPConfig", "CLIPImageProcessor", "CLIPModel", "CLIPTokenizer", "tokenize"]

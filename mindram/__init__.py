"""mindram: CLIP and Recognize Anything (RAM, RAM++) on MindSpore."""
import os as _os

# MindSpore logs INFO/WARNING lines from C++ at import; keep them off unless the user asks (GLOG_v).
_os.environ.setdefault("GLOG_v", "3")

from . import losses  # noqa: E402
from .config import MindFormerConfig  # noqa: E402
from .models.clip import (  # noqa: E402
    CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer, tokenize)

__version__ = "0.1.0"

__all__ = ["CLIPConfig", "CLIPImageProcessor", "CLIPModel", "CLIPTokenizer", "MindFormerConfig", "losses",
           "tokenize", "__version__"]

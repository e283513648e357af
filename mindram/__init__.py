"""mindram: CLIP and Recognize Anything (RAM, RAM++) on MindSpore.

Flow: YAML config → :class:`MindFormerConfig` → registry (:class:`MindFormerRegister`) builds the
model/processor/dataset → task (``mindram.trainer.tasks``) → :class:`Trainer` or :func:`pipeline`.
"""
import os as _os

# MindSpore logs INFO/WARNING lines from C++ at import; keep them off unless the user asks (GLOG_v).
_os.environ.setdefault("GLOG_v", "3")

from . import embeddings, losses, metrics  # noqa: E402
from .config import MindFormerConfig  # noqa: E402
from .models.clip import (  # noqa: E402
    CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer, tokenize)
from .models.ram import RAM, RAMConfig, RAMImageProcessor, RAMPlus  # noqa: E402
from .registry import MindFormerModuleType, MindFormerRegister, build_from_cfg  # noqa: E402
from . import data  # noqa: E402,F401  (registers the datasets)
from .trainer import Trainer, TrainingArguments  # noqa: E402
from .pipeline import pipeline  # noqa: E402

__version__ = "0.1.0"

__all__ = ["CLIPConfig", "CLIPImageProcessor", "CLIPModel", "CLIPTokenizer", "MindFormerConfig",
           "MindFormerModuleType", "MindFormerRegister", "RAM", "RAMConfig", "RAMImageProcessor", "RAMPlus",
           "Trainer", "TrainingArguments", "build_from_cfg", "embeddings", "losses", "metrics", "pipeline",
           "tokenize", "__version__"]

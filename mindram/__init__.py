"""mindram: CLIP and Recognize Anything (RAM, RAM++) on MindSpore.

Flow: YAML config → :class:`MindFormerConfig` → registry (:class:`MindFormerRegister`) builds the
model/processor/dataset → task (``mindram.trainer.tasks``) → :class:`Trainer` or :func:`pipeline`.

Importing mindram changes no process-wide setting (environment, MindSpore context, seeds, logging);
docs/global_state.md lists every global that a mindram call reads or touches.
"""
from . import embeddings, losses, metrics
from .config import MindFormerConfig
from .models.clip import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer, tokenize
from .models.ram import RAM, RAMConfig, RAMImageProcessor, RAMPlus
from .registry import MindFormerModuleType, MindFormerRegister, build_from_cfg
from . import data  # noqa: F401  (registers the datasets)
from .trainer import Trainer, TrainingArguments
from .pipeline import pipeline

__version__ = "0.1.0"

__all__ = ["CLIPConfig", "CLIPImageProcessor", "CLIPModel", "CLIPTokenizer", "MindFormerConfig",
           "MindFormerModuleType", "MindFormerRegister", "RAM", "RAMConfig", "RAMImageProcessor", "RAMPlus",
           "Trainer", "TrainingArguments", "build_from_cfg", "embeddings", "losses", "metrics", "pipeline",
           "tokenize", "__version__"]

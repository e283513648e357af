"""mindram: CLIP and Recognize Anything (RAM, RAM++) on MindSpore.

Flow: YAML config → :class:`MindFormerConfig` → registry (:class:`MindFormerRegister`) builds the
model/processor/dataset → task (``mindram.trainer.tasks``) → :class:`Trainer` or :func:`pipeline`.

Importing mindram changes no process-wide setting (environment, MindSpore context, seeds, logging);
docs/global_state.md lists every global that a mindram call reads or touches.
"""
import importlib
import sys
import types

from .registry import MindFormerModuleType, MindFormerRegister, build_from_cfg

# The public names, imported at first use: ``import mindram`` (and every ``python -m mindram.<command> --help``)
# stays light; MindSpore is imported with the first model, trainer or pipeline.
_API = {
    "MindFormerConfig": ".config",
    "CLIPConfig": ".models.clip", "CLIPImageProcessor": ".models.clip", "CLIPModel": ".models.clip",
    "CLIPTokenizer": ".models.clip", "tokenize": ".models.clip",
    "RAM": ".models.ram", "RAMConfig": ".models.ram", "RAMImageProcessor": ".models.ram", "RAMPlus": ".models.ram",
    "Trainer": ".trainer", "TrainingArguments": ".trainer",
    "pipeline": ".pipeline",
}
_SUBMODULES = ("data", "embeddings", "losses", "metrics")
# Modules whose import registers the built-in ``type:`` names (models, processors, datasets, metrics,
# optimizers, schedules, tasks, pipelines): imported before the registry answers its first lookup.
_REGISTERING = (".models.clip", ".models.ram", ".models.swin", ".data", ".metrics", ".trainer.optim",
                ".trainer.tasks", ".pipeline")


def _register_builtins():
    for name in _REGISTERING:
        module = importlib.import_module(name, __name__)
        if hasattr(module, "register"):   # a model family registers its classes when asked (its import is light)
            module.register()


MindFormerRegister.add_loader(_register_builtins)


def __getattr__(name):
    if name in _API:
        value = getattr(importlib.import_module(_API[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """``mindram.pipeline`` is the :func:`~mindram.pipeline.pipeline` function, as ``from .pipeline import
    pipeline`` made it: importing the submodule ``mindram.pipeline`` (which binds it on its parent) keeps it so."""

    def __setattr__(self, name, value):
        if name == "pipeline" and isinstance(value, types.ModuleType) and hasattr(value, "pipeline"):
            value = value.pipeline
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __dir__():
    return sorted(set(globals()) | set(_API) | set(_SUBMODULES))


__version__ = "0.1.0"

__all__ = ["CLIPConfig", "CLIPImageProcessor", "CLIPModel", "CLIPTokenizer", "MindFormerConfig",
           "MindFormerModuleType", "MindFormerRegister", "RAM", "RAMConfig", "RAMImageProcessor", "RAMPlus",
           "Trainer", "TrainingArguments", "build_from_cfg", "embeddings", "losses", "metrics", "pipeline",
           "tokenize", "__version__"]

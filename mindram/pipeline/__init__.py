"""``pipeline(task, model=...)``: ready-to-call inference for a task (MindFormers' factory signature).

Supported tasks are the registered pipeline classes (``MindFormerModuleType.PIPELINE``) whose ``task``
attribute is their registered alias: ``zero_shot_image_classification``, ``feature_extraction`` and
``image_tagging`` here.
"""
import difflib

from ..errors import UnknownNameError
from ..registry import MindFormerModuleType, MindFormerRegister
from ..utils.lazy import lazy_exports

_EXPORTS = {"Pipeline": ".base", "FeatureExtractionPipeline": ".feature_extraction",
            "ImageTaggingPipeline": ".image_tagging",
            "ZeroShotImageClassificationPipeline": ".zero_shot_image_classification"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


def register():
    """Register the built-in pipelines (the registry calls this before its first lookup)."""
    for name in _EXPORTS:   # each class registers itself where it is defined
        __getattr__(name)


def supported_tasks():
    """Names accepted by :func:`pipeline`."""
    names = MindFormerRegister.names(MindFormerModuleType.PIPELINE)   # built-ins registered first
    return sorted(name for name in names
                  if getattr(MindFormerRegister.get_cls(MindFormerModuleType.PIPELINE, name), "task", None) == name)


def get_pipeline_class(task):
    """The pipeline class of ``task`` (``-`` and ``_`` are interchangeable); ``KeyError`` lists the supported tasks."""
    name = str(task).replace("-", "_")
    tasks = supported_tasks()
    if name not in tasks:
        close = difflib.get_close_matches(name, tasks, n=3, cutoff=0.4)
        raise UnknownNameError(f"unknown pipeline task {task!r}; closest: {close or 'none'}; supported tasks: {tasks}")
    return MindFormerRegister.get_cls(MindFormerModuleType.PIPELINE, name)


def pipeline(task, model=None, image_processor=None, tokenizer=None, batch_size=8, backend="mindspore", **kwargs):
    """Build the pipeline of ``task``.

    Args:
        task: a task name, see :func:`supported_tasks`.
        model: a model name (``"clip_vit_b_32.laion2b_s34b_b79k"``), a directory or ``.ckpt`` path (loaded as the
            pipeline's model class, :meth:`Pipeline.model_class`), or a model instance of any family that has
            the pipeline's ``model_methods`` (used as it is, never changed); None loads the pipeline's
            ``default_model``. A path that does not exist is a ``ConfigError`` saying so.
        image_processor: a processor instance or a dict of arguments of the model's ``image_processor_class``;
            default ``model.image_processor`` (its image size and the catalog preprocessing of its weights).
        tokenizer: a tokenizer (``CLIPTokenizer``) or any callable ``texts -> ids``; default ``model.tokenizer``.
        batch_size: inputs per model call (lists are split and padded internally).
        backend: ``"mindspore"`` (default) or ``"onnxruntime"`` (CLIP; needs the ``onnx`` extra): then ``model``
            is an export directory (``python -m mindram.export``), or a model name / directory / checkpoint that is
            exported once into ``$MINDRAM_HOME/exports`` and reused (:mod:`mindram.backends.export_cache`); run by
            :mod:`mindram.backends`. On CPU it is the faster backend (docs/benchmarks.md).
        **kwargs: task options used as defaults for every call, e.g. ``candidate_labels=[...]``.
    """
    cls = get_pipeline_class(task)
    if backend != "mindspore":
        from ..backends import load_backend  # pylint: disable=import-outside-toplevel
        model = load_backend(backend, model)
    return cls(model=model, image_processor=image_processor, tokenizer=tokenizer, batch_size=batch_size, **kwargs)


__all__ = ["pipeline", "supported_tasks", "get_pipeline_class", "Pipeline", "FeatureExtractionPipeline",
           "ImageTaggingPipeline", "ZeroShotImageClassificationPipeline"]

"""Inference backends other than MindSpore, run on export directories (``python -m mindram.export``).

``load_backend("onnxruntime", EXPORT_DIR)`` returns a model object with the interface the pipelines and
:func:`mindram.embeddings.write_embeddings` use, chosen by the family recorded in ``export.json``. Given a model
name, a ``save_pretrained`` directory or a checkpoint instead, the model is exported once into
``$MINDRAM_HOME/exports`` and that export is used (:mod:`mindram.backends.export_cache`).
"""
import os

from ..errors import ConfigError

BACKENDS = ("mindspore", "onnxruntime")


def check_backend(backend):
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r} not supported; expected one of {BACKENDS}")
    return backend


def load_backend(backend, model, **options):
    """``model`` opened with ``backend``: an export directory, or a model name / directory / checkpoint, exported
    on first use (:func:`~mindram.backends.export_cache.cached_export`); ``"mindspore"`` returns ``model``
    unchanged."""
    if check_backend(backend) == "mindspore":
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise ConfigError(f"backend={backend!r} needs model= an export directory, a model name or a checkpoint "
                          f"path (a model instance cannot be exported and cached by name), got "
                          f"{type(model).__name__}")
    from .export_cache import cached_export  # pylint: disable=import-outside-toplevel
    model = cached_export(model)
    from ..export.manifest import read_manifest  # pylint: disable=import-outside-toplevel
    family = read_manifest(model, fmt="onnx", verify=False).get("family")
    from .onnxruntime import ONNXRuntimeCLIP  # pylint: disable=import-outside-toplevel
    classes = {"clip": ONNXRuntimeCLIP}
    if family not in classes:
        raise ConfigError(f"{model}: no {backend} backend for a {family!r} export; supported: {sorted(classes)}")
    return classes[family](model, **options)


__all__ = ["load_backend", "check_backend", "BACKENDS"]

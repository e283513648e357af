"""Inference backends other than MindSpore for export directories (``python -m mindram.export``).

``load_backend("onnxruntime", EXPORT_DIR)`` returns a model object with the interface the pipelines and
:func:`mindram.embeddings.write_embeddings` use, chosen by the family recorded in ``export.json``.
"""
import os
from pathlib import Path

from ..errors import ConfigError

BACKENDS = ("mindspore", "onnxruntime")


def check_backend(backend):
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r} not supported; expected one of {BACKENDS}")
    return backend


def load_backend(backend, model, **options):
    """``model`` (an export directory) opened with ``backend``; ``"mindspore"`` returns ``model`` unchanged."""
    if check_backend(backend) == "mindspore":
        return model
    if not isinstance(model, (str, os.PathLike)) or not Path(model).is_dir():
        raise ConfigError(f"backend={backend!r} needs model= an export directory (python -m mindram.export ... "
                          f"--output DIR), got {model!r}")
    from ..export.manifest import read_manifest  # pylint: disable=import-outside-toplevel
    family = read_manifest(model, fmt="onnx", verify=False).get("family")
    from .onnxruntime import ONNXRuntimeCLIP  # pylint: disable=import-outside-toplevel
    classes = {"clip": ONNXRuntimeCLIP}
    if family not in classes:
        raise ConfigError(f"{model}: no {backend} backend for a {family!r} export; supported: {sorted(classes)}")
    return classes[family](model, **options)


__all__ = ["load_backend", "check_backend", "BACKENDS"]

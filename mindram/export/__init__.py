"""Deployable graphs: per-tower CLIP export (ONNX and MindIR), the RAM/RAM++ tagger (MindIR), each with an
``export.json`` manifest.

``python -m mindram.export --model NAME_OR_PATH --format mindir|onnx|both --output DIR`` or
``model.export(DIR, ...)``; load the result with :mod:`mindram.backends` (onnxruntime) or
``mindspore.load`` + ``nn.GraphCell``. See ``docs/deploy.md``.
"""
from ..errors import ConfigError
from ..utils.lazy import lazy_exports

_EXPORTS = {"export_clip": ".clip", "MANIFEST": ".manifest", "read_manifest": ".manifest",
            "ExportedTagger": ".tagger", "export_tagger": ".tagger"}
_lazy_getattr, __dir__ = lazy_exports(__name__, _EXPORTS)
#: family -> name of its exporter function (imported when a model of that family is exported)
_EXPORTER_NAMES = {"clip": "export_clip", "ram": "export_tagger"}


def __getattr__(name):
    if name == "EXPORTERS":   # {family: exporter function}
        return {family: _lazy_getattr(function) for family, function in _EXPORTER_NAMES.items()}
    return _lazy_getattr(name)


def export_model(model, output, **kwargs):
    """Export ``model`` with the exporter of its family (:data:`EXPORTERS`); returns the manifest."""
    family = getattr(model, "family", None)
    if family not in _EXPORTER_NAMES:
        raise ConfigError(f"no exporter for model family {family!r} ({type(model).__name__}); "
                          f"exportable families: {sorted(_EXPORTER_NAMES)}")
    return _lazy_getattr(_EXPORTER_NAMES[family])(model, output, **kwargs)


__all__ = ["export_model", "export_clip", "export_tagger", "ExportedTagger", "read_manifest", "MANIFEST",
           "EXPORTERS"]

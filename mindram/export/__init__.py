"""Deployable graphs: per-tower CLIP export (ONNX and MindIR), the RAM/RAM++ tagger (MindIR), each with an
``export.json`` manifest.

``python -m mindram.export --model NAME_OR_PATH --format mindir|onnx|both --output DIR`` or
``model.export(DIR, ...)``; load the result with :mod:`mindram.backends` (onnxruntime) or
``mindspore.load`` + ``nn.GraphCell``. See ``docs/deploy.md``.
"""
from ..errors import ConfigError
from .clip import export_clip
from .manifest import MANIFEST, read_manifest
from .tagger import ExportedTagger, export_tagger

EXPORTERS = {"clip": export_clip, "ram": export_tagger}


def export_model(model, output, **kwargs):
    """Export ``model`` with the exporter of its family (:data:`EXPORTERS`); returns the manifest."""
    family = getattr(model, "family", None)
    if family not in EXPORTERS:
        raise ConfigError(f"no exporter for model family {family!r} ({type(model).__name__}); "
                          f"exportable families: {sorted(EXPORTERS)}")
    return EXPORTERS[family](model, output, **kwargs)


__all__ = ["export_model", "export_clip", "export_tagger", "ExportedTagger", "read_manifest", "MANIFEST",
           "EXPORTERS"]

"""ONNX exports made on demand for ``backend="onnxruntime"``, kept in ``$MINDRAM_HOME/exports``.

``pipeline(task, model="clip_vit_b_32", backend="onnxruntime")`` (or a ``save_pretrained`` directory, or a
``.ckpt``/``.safetensors`` file) exports the model once, the first time it is asked for, and reuses that export
afterwards. ONNX Runtime runs the CLIP towers 1.2-2.5x faster than open_clip on CPU, MindSpore graphs 1.0-2.1x
(docs/benchmarks.md); an export of ViT-B/32 takes about a minute and 600 MB of disk.

An export is keyed by what it was made from: the checkpoint file and its config file (resolved path, size and
modification time), the export options, the file layout and mindram's version. A changed checkpoint gets a new
export; a stale one stays until deleted (``rm -r $MINDRAM_HOME/exports``). The export is written into a temporary
folder beside its final place and renamed into place when complete, so an interrupted export is never used, and
two processes exporting the same model at once both end up with a complete one.
"""
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .. import catalog
from ..errors import ConfigError
from ..export.common import ONNX_INLINE_WEIGHTS_LIMIT
from ..export.manifest import MANIFEST
from ..utils.io import mindram_home

logger = logging.getLogger(__name__)

FAMILIES = ("clip",)   # families with an ONNX Runtime backend
OPTIONS = {"formats": "onnx", "dynamic_batch": True}


def is_export_dir(path):
    return isinstance(path, (str, os.PathLike)) and (Path(path) / MANIFEST).is_file()


def _source_files(name_or_path, family):
    """The checkpoint (fetched if a name's is not here yet) and config files a model is loaded from."""
    from ..models.modeling_utils import directory_checkpoint  # pylint: disable=import-outside-toplevel
    from ..models.pretrained_weights import fetch_checkpoint  # pylint: disable=import-outside-toplevel
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir():
        return [directory_checkpoint(path, error=ConfigError), path / "config.yaml"]
    if path.suffix in (".ckpt", ".safetensors"):
        return [path, path.with_suffix(".yaml")]
    record = catalog.resolve(family, str(name_or_path))
    ckpt = record.checkpoint_path if record.checkpoint_path.is_file() else fetch_checkpoint(record)
    return [Path(ckpt), Path(ckpt).with_suffix(".yaml")]


def export_key(files, options):
    """A short hash of the source files' (resolved path, size, mtime), the export options and file layout."""
    from .. import __version__  # pylint: disable=import-outside-toplevel
    stats = []
    for file in files:
        file = Path(file).resolve()
        stat = file.stat() if file.is_file() else None
        stats.append([str(file), stat and stat.st_size, stat and stat.st_mtime_ns])
    # the file layout is part of what an export is: one made when weights stayed inside the graph (a session held
    # them twice) is not reused once they are kept apart
    layout = {"inline_weights_limit": ONNX_INLINE_WEIGHTS_LIMIT}
    text = json.dumps({"files": stats, "options": options, "layout": layout, "mindram": __version__}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _slug(name_or_path):
    path = Path(str(name_or_path))
    text = path.stem if path.suffix in (".ckpt", ".safetensors") else path.name
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:60] or "model"


def cached_export(name_or_path):
    """The export directory of ``name_or_path`` for ONNX Runtime: the directory itself when it is one already,
    else the cached export of that model name / directory / checkpoint, made now if it is not there yet."""
    if is_export_dir(name_or_path):
        return Path(name_or_path)
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir() and not any(p.suffix in (".ckpt", ".safetensors") for p in path.iterdir()):
        raise ConfigError(f"{path}: no {MANIFEST} (an export directory: python -m mindram.export) and no .ckpt or "
                          f".safetensors (a model directory) in it")
    from ..export import export_model  # pylint: disable=import-outside-toplevel
    from ..export.__main__ import detect_family, load_model  # pylint: disable=import-outside-toplevel
    family = detect_family(str(name_or_path))
    if family not in FAMILIES:
        raise ConfigError(f"{name_or_path}: a {family!r} model; backend='onnxruntime' runs {list(FAMILIES)} "
                          f"models (RAM/RAM++ export to MindIR only: python -m mindram.export)")
    files = _source_files(name_or_path, family)
    folder = mindram_home() / "exports" / f"{_slug(name_or_path)}-{export_key(files, OPTIONS)}"
    if is_export_dir(folder):
        logger.info("using the ONNX export of %s in %s", name_or_path, folder)
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    logger.info("exporting %s to ONNX for backend='onnxruntime' (once; kept in %s)", name_or_path, folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        export_model(load_model(str(name_or_path), family), tmp, model_name=str(name_or_path), **OPTIONS)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not is_export_dir(folder):   # not another process's complete export: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder

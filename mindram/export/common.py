"""What every family's export shares: the output directory, writing ONNX files, the manifest's common keys."""
import logging
import os
from pathlib import Path

import mindspore as ms

from ..errors import ConfigError, OutputExistsError
from ..utils.io import atomic_write
from .manifest import FORMAT, FORMATS, MANIFEST, file_record, weights_sha256
from .onnx_builder import OPSET

logger = logging.getLogger(__name__)

# Graphs with more weight bytes than this keep them in ``<name>.onnx.data`` beside the graph (protobuf's 2 GB limit
# needs it from 2 GB on). ONNX Runtime maps such a file and releases each weight once it has prepacked it; weights
# inside the graph were copied to its heap, where the released originals stayed resident: a ViT-L/14 image session
# held 2054 MiB after a call vs 1289 MiB with the weights apart, at the same speed (docs/performance.md).
ONNX_INLINE_WEIGHTS_LIMIT = 32 * 2**20
# ``single_file=True`` keeps every weight inside the ``.onnx`` file, for tools that do not read external data; a
# protobuf message (the whole graph) cannot exceed 2 GiB, so a tower with more is refused.
ONNX_SINGLE_FILE_LIMIT = 2**31 - 1


def check_formats(formats):
    """``formats`` (a string ``onnx``/``mindir``/``both`` or a list) as a tuple of known formats."""
    if isinstance(formats, str):
        formats = FORMATS if formats == "both" else tuple(f.strip() for f in formats.split(","))
    formats = tuple(formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ConfigError(f"export format {bad or formats!r} not supported; expected onnx, mindir or both")
    return formats


def prepare_output(output, overwrite):
    """The output directory, created; an existing export there is refused unless ``overwrite``."""
    output = Path(output)
    if (output / MANIFEST).is_file() and not overwrite:
        raise OutputExistsError(f"{output} already holds an export ({MANIFEST}); choose another --output or "
                                f"pass --overwrite")
    output.mkdir(parents=True, exist_ok=True)
    return output


def save_onnx(model_proto, path, single_file=False):
    """Write an ``onnx.ModelProto`` atomically; weights of more than :data:`ONNX_INLINE_WEIGHTS_LIMIT` bytes go to
    ``<name>.onnx.data`` beside it, unless ``single_file`` (all weights inside the graph; a graph over
    :data:`ONNX_SINGLE_FILE_LIMIT` bytes is a ConfigError). Returns the file records (``onnx`` and, if any,
    ``onnx_data``)."""
    import onnx  # pylint: disable=import-outside-toplevel
    path = Path(path)
    size = sum(len(t.raw_data) for t in model_proto.graph.initializer)
    if single_file:
        total = size if size > ONNX_SINGLE_FILE_LIMIT else model_proto.ByteSize()  # (no ByteSize over the limit)
        if total > ONNX_SINGLE_FILE_LIMIT:
            raise ConfigError(f"{path}: the graph with its weights is {total} bytes, more than one .onnx file holds "
                              f"({ONNX_SINGLE_FILE_LIMIT} bytes, protobuf's 2 GiB limit); export without "
                              f"--single_file (weights in {path.name}.data beside it)")
    records = {}
    if single_file and (path.parent / f"{path.name}.data").exists():
        os.remove(path.parent / f"{path.name}.data")   # a previous export's weights file, not part of this one
    if size > ONNX_INLINE_WEIGHTS_LIMIT and not single_file:
        data = f"{path.name}.data"
        if (path.parent / data).exists():
            os.remove(path.parent / data)
        with atomic_write(path) as tmp:
            onnx.save_model(model_proto, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data, size_threshold=1024)
        # onnx creates the weights file owner-only; give it the graph's mode (a plain new file's, see atomic_write)
        os.chmod(path.parent / data, path.stat().st_mode & 0o777)
        records["onnx_data"] = file_record(path.parent, data)
    else:
        with atomic_write(path) as tmp:
            onnx.save_model(model_proto, tmp)
    records["onnx"] = file_record(path.parent, path.name)
    logger.info("wrote %s", path)
    return records


def base_manifest(model, model_name, dynamic_batch, batch_size):
    from .. import __version__ as mindram_version  # pylint: disable=import-outside-toplevel
    try:
        import onnx  # pylint: disable=import-outside-toplevel
        onnx_version = onnx.__version__
    except ImportError:
        onnx_version = None
    return {"format": FORMAT, "family": model.family,
            "model": str(model_name or getattr(model.config, "checkpoint_name_or_path", None) or type(model).__name__),
            "weights_sha256": weights_sha256(model), "config": model.config.to_dict(),
            "dynamic_batch": bool(dynamic_batch), "batch_size": None if dynamic_batch else int(batch_size),
            "onnx_opset": OPSET, "onnx_version": onnx_version, "mindspore_version": ms.__version__,
            "mindram_version": mindram_version, "graphs": {}}


def check_batch(dynamic_batch, batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    return None if dynamic_batch else batch_size

"""Per-tower export of a :class:`~mindram.CLIPModel`: ``image_encoder.{onnx,mindir}``,
``text_encoder.{onnx,mindir}`` and ``export.json``.

The towers are exported apart, as the seeds' offline-inference flow does (vectors of a dataset are computed
per modality and written to disk). Each graph returns the projected, un-normalised features
(``get_image_features``/``get_text_features``); the manifest says so (``normalized: false``) and carries
the preprocessing of the weights and the tokenizer's context length.
"""
import logging

from ..errors import ConfigError
from .clip_onnx import IMAGE_INPUT, IMAGE_OUTPUT, TEXT_DTYPES, TEXT_INPUT, TEXT_OUTPUT, image_tower_graph, \
    text_tower_graph
from .common import base_manifest, check_batch, check_formats, prepare_output, save_onnx
from .manifest import file_record, tensor_spec, write_manifest
from .mindir import export_mindir

logger = logging.getLogger(__name__)

TOWERS = ("image", "text")
GRAPH_NAMES = {"image": "image_encoder", "text": "text_encoder"}


def check_towers(towers):
    if isinstance(towers, str):
        towers = [t.strip() for t in towers.split(",") if t.strip()]
    bad = [t for t in towers if t not in TOWERS]
    if bad or not towers:
        raise ConfigError(f"--towers {','.join(towers) if towers else '(empty)'}: expected a comma-separated "
                          f"subset of {','.join(TOWERS)}")
    return tuple(dict.fromkeys(towers))


def _tower(model, tower, batch, text_dtype):
    """``(cell, [(input shape, dtype)], input spec, output spec, ONNX builder)`` of one tower."""
    dim = model.config.projection_dim
    if tower == "image":
        size = model.image_size
        shape = (batch, 3, size, size)
        return (model.visual, [(shape, "float32")], tensor_spec(IMAGE_INPUT, shape, "float32"),
                tensor_spec(IMAGE_OUTPUT, (batch, dim), "float32"),
                lambda version: image_tower_graph(model.visual, size, batch is None, batch or 1, version))
    shape = (batch, model.context_length)
    return (model.text, [(shape, text_dtype)], tensor_spec(TEXT_INPUT, shape, text_dtype),
            tensor_spec(TEXT_OUTPUT, (batch, dim), "float32"),
            lambda version: text_tower_graph(model.text, model.context_length, batch is None, batch or 1,
                                             text_dtype, version))


def export_clip(model, output, formats="both", towers=TOWERS, dynamic_batch=False, batch_size=1,
                text_dtype="int64", model_name=None, overwrite=False, single_file=False):
    """Export the towers of ``model`` into ``output``; returns the manifest (also written as ``export.json``).

    Args:
        formats: ``"onnx"``, ``"mindir"``, ``"both"`` or a list of them.
        towers: ``("image", "text")`` or a subset (a list or a comma-separated string).
        dynamic_batch: a symbolic batch axis; otherwise the graphs take exactly ``batch_size`` rows.
        text_dtype: ``"int64"`` (the seeds' ONNX signature) or ``"int32"`` token ids.
        model_name: the name recorded in the manifest (default: the config's weights name).
        overwrite: replace an export already in ``output``.
        single_file: keep each tower's weights inside its ``.onnx`` file (for tools that read no external data),
            refused for a tower over 2 GiB; default: a tower over 32 MiB keeps them in ``<name>.onnx.data``.
    """
    formats, towers = check_formats(formats), check_towers(towers)
    if single_file and "onnx" not in formats:
        raise ConfigError(f"single_file (--single_file) is an ONNX option; formats {list(formats)} write no ONNX file")
    if text_dtype not in TEXT_DTYPES:
        raise ConfigError(f"text_dtype {text_dtype!r}: expected one of {TEXT_DTYPES}")
    batch = check_batch(dynamic_batch, batch_size)
    output = prepare_output(output, overwrite)
    model.set_train(False)
    manifest = base_manifest(model, model_name, dynamic_batch, batch_size)
    manifest["preprocessing"] = model.image_processor.to_dict()
    manifest["tokenizer"] = {"type": type(model.tokenizer).__name__, "context_length": model.context_length}
    from .. import __version__ as version  # pylint: disable=import-outside-toplevel
    for tower in towers:
        cell, inputs, input_spec, output_spec, build_onnx = _tower(model, tower, batch, text_dtype)
        name = GRAPH_NAMES[tower]
        files = {}
        if "onnx" in formats:
            files.update(save_onnx(build_onnx(version), output / f"{name}.onnx", single_file=single_file))
        if "mindir" in formats:
            export_mindir(cell, inputs, output / f"{name}.mindir")
            files["mindir"] = file_record(output, f"{name}.mindir")
        manifest["graphs"][name] = {"tower": tower, "files": files, "inputs": [input_spec],
                                    "outputs": [output_spec], "normalized": False}
    write_manifest(output, manifest)  # last: its presence marks a complete export
    logger.info("exported %s (%s) to %s", manifest["model"], ", ".join(towers), output)
    return manifest

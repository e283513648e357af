"""RAM / RAM++ tagger export: image → per-tag logits as one MindIR graph (``tagger.mindir``), with everything
tag selection needs in ``export.json`` (``vocabulary``: English and Chinese names, per-tag thresholds,
``delete_tag_index``; the preprocessing), and :class:`ExportedTagger`, which reproduces ``generate_tag`` from
the exported graph and the manifest alone (``mindspore.load`` + ``nn.GraphCell``; no model code or weights).

The graph holds the vocabulary's label embeddings as constants: an open-set vocabulary installed on the model
(``set_open_set_tags``) is exported as it is. Only MindIR is written: the Swin encoder's exact GELU has no
route through MindSpore 2.10's ONNX exporter (no ``Erf``), and the ONNX builder of :mod:`.onnx_builder` covers
the CLIP towers only.
"""
import logging
from pathlib import Path

import numpy as np
from mindspore import Tensor, nn

from ..errors import ConfigError
from .common import base_manifest, check_batch, check_formats, prepare_output
from .manifest import file_record, read_manifest, tensor_spec, write_manifest
from .mindir import export_mindir, load_mindir

logger = logging.getLogger(__name__)

GRAPH = "tagger"
INPUT, OUTPUT = "image", "tag_logits"
SEPARATOR = " | "


class TaggerGraph(nn.Cell):
    """``pixels → (N, K) logits`` of a tagging model with fixed label embeddings (None: the checkpoint's)."""

    def __init__(self, model, label_embed=None):
        super().__init__()
        self.model = model
        self.label_embed = None if label_embed is None else Tensor(np.asarray(
            label_embed.asnumpy() if hasattr(label_embed, "asnumpy") else label_embed, np.float32))

    def construct(self, pixel_values):
        if self.label_embed is None:
            return self.model(pixel_values)
        return self.model(pixel_values, self.label_embed)


def export_tagger(model, output, formats="mindir", dynamic_batch=False, batch_size=1, model_name=None,
                  overwrite=False):
    """Export a RAM/RAM++ model's tagger into ``output`` (``tagger.mindir`` + ``export.json``); returns the manifest."""
    formats = check_formats(formats)
    if "onnx" in formats:
        raise ConfigError("RAM/RAM++ export: only --format mindir is supported (the ONNX builder covers the CLIP "
                          "towers; MindSpore's ONNX exporter has no Erf for the Swin GELU)")
    batch = check_batch(dynamic_batch, batch_size)
    output = prepare_output(output, overwrite)
    model.set_train(False)
    vocabulary = model.vocabulary()
    size = model.config.image_size
    shape = (batch, 3, size, size)
    manifest = base_manifest(model, model_name, dynamic_batch, batch_size)
    manifest["preprocessing"] = model.image_processor.to_dict()
    manifest["vocabulary"] = {"names": list(vocabulary.names), "names_chinese": list(vocabulary.names_chinese),
                              "thresholds": [float(t) for t in vocabulary.thresholds],
                              "delete_tag_index": [int(i) for i in vocabulary.delete_tag_index],
                              "open_set": vocabulary.label_embed is not None,
                              "rule": "sigmoid(logit) > threshold, in tag-index order, joined with ' | '"}
    export_mindir(TaggerGraph(model, vocabulary.label_embed), [(shape, "float32")], output / f"{GRAPH}.mindir")
    manifest["graphs"][GRAPH] = {"files": {"mindir": file_record(output, f"{GRAPH}.mindir")},
                                 "inputs": [tensor_spec(INPUT, shape, "float32")],
                                 "outputs": [tensor_spec(OUTPUT, (batch, len(vocabulary.names)), "float32")],
                                 "normalized": False}
    write_manifest(output, manifest)
    logger.info("exported the %s tagger (%d tags) to %s", model.config.model_type, len(vocabulary.names), output)
    return manifest


def _sigmoid(logits):
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float32)))).astype(np.float32)


class ExportedTagger:
    """``ExportedTagger(export_dir).generate_tag(images)`` → (English, Chinese) ' | '-joined tags per image,
    from ``tagger.mindir`` and ``export.json`` only (the model's selection rule: score strictly above the
    per-tag threshold, ``delete_tag_index`` removed, tag-index order)."""

    def __init__(self, export_dir, verify=True):
        from ..models.ram.image_processing import RAMImageProcessor  # pylint: disable=import-outside-toplevel
        self.export_dir = Path(export_dir)
        self.manifest = read_manifest(self.export_dir, fmt="mindir", verify=verify)
        if self.manifest.get("family") != "ram" or GRAPH not in self.manifest["graphs"]:
            raise ConfigError(f"{self.export_dir}: not a RAM/RAM++ tagger export")
        vocabulary = self.manifest["vocabulary"]
        self.names, self.names_chinese = vocabulary["names"], vocabulary["names_chinese"]
        self.thresholds = np.asarray(vocabulary["thresholds"], np.float32)
        self.delete_tag_index = list(vocabulary["delete_tag_index"])
        self.image_processor = RAMImageProcessor.from_dict(self.manifest["preprocessing"])
        self.batch = self.manifest["batch_size"]
        self.graph = load_mindir(self.export_dir / self.manifest["graphs"][GRAPH]["files"]["mindir"]["path"])

    def get_tag_logits(self, pixel_values):
        """(N, 3, S, S) float32 (or images for the processor) → (N, K) logits."""
        if not isinstance(pixel_values, np.ndarray):
            pixel_values = self.image_processor(pixel_values)
        pixels = np.asarray(pixel_values, np.float32)
        if self.batch is None:
            return self.graph(Tensor(pixels)).asnumpy()
        out = []
        for start in range(0, len(pixels), self.batch):
            chunk = pixels[start:start + self.batch]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - len(chunk), axis=0)])
            out.append(self.graph(Tensor(padded)).asnumpy()[:len(chunk)])
        return np.concatenate(out)

    def get_tag_scores(self, pixel_values):
        return _sigmoid(self.get_tag_logits(pixel_values))

    def generate_tag(self, pixel_values):
        hits = self.get_tag_scores(pixel_values) > self.thresholds[None, :]
        if self.delete_tag_index:
            hits[:, self.delete_tag_index] = False
        rows = [np.flatnonzero(row) for row in hits]
        return ([SEPARATOR.join(self.names[i] for i in row) for row in rows],
                [SEPARATOR.join(self.names_chinese[i] for i in row) for row in rows])

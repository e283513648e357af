"""ONNX Runtime backend: run an export directory (``export.json`` + ``*.onnx``) without MindSpore graphs.

:class:`ONNXRuntimeCLIP` has the dual-encoder interface the CLIP pipelines and the embedding export use
(``get_image_features``, ``get_text_features``, ``image_processor``, ``tokenizer``, ``context_length``,
``config``), on numpy arrays. The manifest is checked when the directory is opened (files present, sizes and
sha256 as recorded, the graphs' inputs as listed); a graph exported with a fixed batch size is fed in chunks
of that size (the last padded by repeating its last row, whose outputs are dropped).
"""
import functools
import logging
import threading
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..export.manifest import read_manifest
from ..export.optional import require
from ..models.clip.configuration import CLIPConfig
from ..models.clip.image_processing import CLIPImageProcessor
from ..utils.batching import micro_batches

logger = logging.getLogger(__name__)


class ExportedGraph:
    """One ONNX graph of an export: ``graph(array) -> first output`` as a float32 numpy array."""

    def __init__(self, directory, name, record, num_threads=None, memory_pattern=False, prepack=True,
                 tokens_per_item=1, max_batch_tokens=None):
        ort = require("onnxruntime", "onnxruntime>=1.16", "backend='onnxruntime'")
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        # ONNX Runtime's memory pattern plans one block for a run's intermediate tensors: ViT-B/16 image tower at
        # batch 32 peaked at 1499 MiB with it and at 1109 MiB without, at the same speed (docs/performance.md)
        options.enable_mem_pattern = bool(memory_pattern)
        if not prepack:   # ONNX Runtime keeps a GEMM-ready copy of the weights: ~200 MiB of a ViT-B/16 image tower
            options.add_session_config_entry("session.disable_prepacking", "1")
        path = Path(directory) / record["files"]["onnx"]["path"]
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.name, self.spec = name, record["inputs"][0]
        self.dtype = np.dtype(self.spec["dtype"])
        self.batch = None if self.spec["shape"][0] == "batch" else int(self.spec["shape"][0])
        found = self.session.get_inputs()[0]
        expected = [None if d == "batch" else d for d in self.spec["shape"]]
        actual = [d if isinstance(d, int) else None for d in found.shape]
        if found.name != self.spec["name"] or actual != expected:
            raise ConfigError(f"{path}: input {found.name} {found.shape} differs from export.json's "
                              f"{self.spec['name']} {self.spec['shape']}; export again")
        self.output = record["outputs"][0]["name"]
        self.tokens_per_item, self.max_batch_tokens = int(tokens_per_item), max_batch_tokens

    def _run(self, array):
        return self.session.run([self.output], {self.spec["name"]: array})[0]

    def __call__(self, array):
        array = np.ascontiguousarray(np.asarray(array.asnumpy() if hasattr(array, "asnumpy") else array),
                                     dtype=self.dtype)
        expected = [d for d in self.spec["shape"][1:]]
        if list(array.shape[1:]) != expected:
            raise ValueError(f"{self.name}: input of shape {array.shape}, expected (N, {', '.join(map(str, expected))})")
        if self.batch is None:
            chunks = micro_batches(len(array), self.tokens_per_item, self.max_batch_tokens)
            out = [self._run(array[start:stop]) for start, stop in chunks]
            return (out[0] if len(out) == 1 else np.concatenate(out)).astype(np.float32, copy=False)
        out = []
        for start in range(0, len(array), self.batch):
            chunk = array[start:start + self.batch]
            if len(chunk) < self.batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - len(chunk), axis=0)])
            out.append(self._run(chunk)[:min(self.batch, len(array) - start)])
        return np.concatenate(out).astype(np.float32, copy=False)


@functools.lru_cache(maxsize=None)
def _tokenizer():
    from ..models.clip.tokenizer import CLIPTokenizer  # pylint: disable=import-outside-toplevel
    return CLIPTokenizer()


class ONNXRuntimeCLIP:
    """A CLIP export run by ONNX Runtime: ``ONNXRuntimeCLIP(export_dir).get_image_features(pixels)``.

    Args:
        export_dir: a directory written by ``python -m mindram.export`` / ``CLIPModel.export`` with ONNX files.
        verify: check the files' sha256 against the manifest (sizes are always checked).
        num_threads: ONNX Runtime intra-op threads (default: its own choice).
        memory_pattern: ONNX Runtime's ``enable_mem_pattern`` (off by default: it raised the peak memory of large
            batches by up to a third and was no faster here).
        prepack: let ONNX Runtime keep prepacked (GEMM-ready) copies of the weights. ``False`` saves memory (a
            ViT-B/16 image tower: 610 → 403 MiB after loading) at some speed (2.2 → 2.5 s at batch 8, measured on a
            busy machine).
        max_batch_tokens: a dynamic-batch graph runs a batch in calls of at most this many tokens (images ×
            patches + 1, or texts × context length), a power of two items each; ``None`` never splits. ONNX Runtime
            ran fastest at ~2,000 tokens per call: ViT-L/14 images at batch 32 1.36 → 1.59 images/s in calls of 8,
            peak memory 3,142 → 2,364 MiB (docs/performance.md).
    """

    family = "clip"
    backend = "onnxruntime"
    image_processor_class = CLIPImageProcessor

    def __init__(self, export_dir, verify=True, num_threads=None, memory_pattern=False, prepack=True,
                 max_batch_tokens=2560):
        self.export_dir = Path(export_dir)
        self.manifest = read_manifest(self.export_dir, fmt="onnx", verify=verify)
        if self.manifest.get("family") != "clip":
            raise ConfigError(f"{self.export_dir}: a {self.manifest.get('family')!r} export, expected a CLIP one")
        self._check_clip_keys()
        self.config = CLIPConfig.from_dict(self.manifest["config"])
        self._records = {record["tower"]: (name, record) for name, record in self.manifest["graphs"].items()}
        self._session_options = (num_threads, memory_pattern, prepack)
        self.max_batch_tokens = max_batch_tokens
        self._lock = threading.Lock()
        self.graphs = {}   # tower -> ExportedGraph, opened at the tower's first use

    def _check_clip_keys(self):
        """The keys of a CLIP export this backend reads (read_manifest checks the common ones): one ``tower``
        (image or text) per graph, each graph with an input and an output, ``config`` an object and
        ``tokenizer.context_length`` a positive int; a one-line ConfigError naming export.json otherwise."""
        where = self.export_dir / "export.json"
        towers = [graph.get("tower") for graph in self.manifest["graphs"].values()]
        if any(t not in ("image", "text") for t in towers) or len(set(towers)) != len(towers):
            raise ConfigError(f"{where}: graph towers {towers}, expected 'image' and/or 'text', each once")
        if any(not graph.get("inputs") or not graph.get("outputs") for graph in self.manifest["graphs"].values()):
            raise ConfigError(f"{where}: every graph must list its inputs and outputs")
        if not isinstance(self.manifest.get("config"), dict):
            raise ConfigError(f"{where}: key 'config' must be the model config (an object)")
        tokenizer = self.manifest.get("tokenizer")
        length = tokenizer.get("context_length") if isinstance(tokenizer, dict) else None
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ConfigError(f"{where}: tokenizer.context_length is {length!r:.40}, expected a positive int")

    @property
    def image_processor(self):
        """The preprocessing recorded in the manifest (size, mean/std, interpolation, resize mode)."""
        return self.image_processor_class.from_dict(self.manifest["preprocessing"])

    @property
    def tokenizer(self):
        return _tokenizer()

    @property
    def context_length(self):
        return int(self.manifest["tokenizer"]["context_length"])

    @property
    def image_size(self):
        return self.config.vision_config.image_size

    @property
    def towers(self):
        """The exported towers (``image``, ``text``)."""
        return sorted(self._records)

    def _graph(self, tower):
        """The tower's ONNX Runtime session, opened at its first use: a process that embeds only images never holds
        the text tower's weights (ViT-L/14: ~470 MB, twice that with prepacked copies)."""
        if tower not in self._records:
            raise ConfigError(f"{self.export_dir}: the {tower} tower was not exported (export.json has "
                              f"{self.towers}); export it with --towers {tower}")
        with self._lock:
            if tower not in self.graphs:
                name, record = self._records[tower]
                tokens = self.config.vision_config.num_tokens if tower == "image" else self.context_length
                self.graphs[tower] = ExportedGraph(self.export_dir, name, record, *self._session_options,
                                                   tokens_per_item=tokens, max_batch_tokens=self.max_batch_tokens)
            return self.graphs[tower]

    def get_image_features(self, pixel_values):
        """(N, 3, S, S) float32 → (N, D) projected, un-normalised image features."""
        return self._graph("image")(pixel_values)

    def get_text_features(self, input_ids):
        """(N, L) token ids (int32 or int64) → (N, D) projected, un-normalised text features."""
        return self._graph("text")(input_ids)

    def __repr__(self):
        return f"ONNXRuntimeCLIP({str(self.export_dir)!r}, towers={self.towers})"

"""``export.json``: what an export directory holds and how to feed it.

Keys: ``format`` (``mindram-export/1``), ``family``, ``model`` (the name or path it was loaded as),
``weights_sha256`` (of the parameters, by name), ``config`` (the model config), ``preprocessing`` (the image
processor's arguments: size, mean, std, interpolation, resize mode), ``dynamic_batch``/``batch_size``,
``onnx_opset``, ``mindspore_version``, ``mindram_version``, and per graph (``graphs.<name>``): its ``files``
(``{format: {"path", "bytes", "sha256"}}``), ``inputs``/``outputs`` (``name``, ``shape`` with ``"batch"`` for
a dynamic axis, ``dtype``) and ``normalized`` (whether the outputs are L2-normalised). A family adds its own
keys (the tagger's vocabulary and thresholds).
"""
import json
from pathlib import Path

from ..errors import ConfigError
from ..hub import sha256_of
from ..utils.embedding_cache import weights_digest
from ..utils.io import atomic_write

FORMAT = "mindram-export/1"
MANIFEST = "export.json"
FORMATS = ("onnx", "mindir")
SUFFIX = {"onnx": ".onnx", "mindir": ".mindir"}


file_sha256 = sha256_of


weights_sha256 = weights_digest  # sha256 over the parameters in name order (name, dtype, shape, bytes)


def file_record(directory, name):
    path = Path(directory) / name
    return {"path": name, "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def tensor_spec(name, shape, dtype):
    return {"name": name, "shape": ["batch" if d is None else int(d) for d in shape], "dtype": dtype}


def write_manifest(directory, manifest):
    path = Path(directory) / MANIFEST
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, ensure_ascii=False, indent=1)
    return path


def read_manifest(directory, fmt=None, verify=True):
    """The manifest of an export directory, checked: its format, and for each graph the file of ``fmt`` (or of
    every format listed) present with its recorded size (and sha256 with ``verify``). Any mismatch is a
    one-line :class:`ConfigError` naming the file and what was expected."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{directory}: not a mindram export directory (no {MANIFEST}); write one with "
                          f"python -m mindram.export --model NAME --output {directory}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(f"{path}: format {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                          f"expected {FORMAT!r}")
    graphs = manifest.get("graphs")
    if not isinstance(graphs, dict) or not graphs:
        raise ConfigError(f"{path}: key 'graphs' must name at least one exported graph")
    for graph_name, graph in graphs.items():
        files = graph.get("files", {})
        wanted = ([fmt] + [f"{fmt}_data"] * (f"{fmt}_data" in files)) if fmt else list(files)
        for kind in wanted:
            if kind not in files:
                raise ConfigError(f"{path}: graph {graph_name!r} has no {kind} file (it has {sorted(files)}); "
                                  f"export it with --format {kind}")
            record = files[kind]
            target = directory / record["path"]
            if not target.is_file():
                raise ConfigError(f"{target}: listed in {path} but missing")
            if target.stat().st_size != record["bytes"]:
                raise ConfigError(f"{target}: {target.stat().st_size} bytes, {path} records {record['bytes']}; "
                                  "the export is incomplete or was changed — export again")
            if verify and file_sha256(target) != record["sha256"]:
                raise ConfigError(f"{target}: sha256 differs from the one recorded in {path}; the file was "
                                  "changed — export again")
    return manifest

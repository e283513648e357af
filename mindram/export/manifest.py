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
import math
from pathlib import Path, PurePosixPath

from ..errors import ConfigError
from ..hub import sha256_of
from ..utils.embedding_cache import weights_digest
from ..utils.io import atomic_write
from ..utils.validation import is_int, is_sha256

FORMAT = "mindram-export/1"
MANIFEST = "export.json"
FORMATS = ("onnx", "mindir")
SUFFIX = {"onnx": ".onnx", "mindir": ".mindir"}
#: dtypes a graph input or output may have
TENSOR_DTYPES = ("float16", "float32", "float64", "int32", "int64", "uint8", "bool")


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


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _channels(path, key, value, positive):
    """``mean``/``std``: a finite number or 3 of them (``std`` > 0); ConfigError naming the value otherwise."""
    values = value if isinstance(value, list) else [value]
    if len(values) != (3 if isinstance(value, list) else 1) or not all(_is_number(v) for v in values) or \
            (positive and not all(v > 0 for v in values)):
        expected = "3 numbers > 0 (or one)" if positive else "3 finite numbers (or one)"
        raise ConfigError(f"{path}: preprocessing.{key} is {value!r:.80}, expected {expected}")


def _byte(value):
    return is_int(value) and 0 <= value <= 255


#: the image processor's scalar arguments: (check, what is expected)
_PREPROCESSING = {
    "image_size": (lambda v: is_int(v) and v >= 1, "a positive int"),
    "interpolation": (lambda v: isinstance(v, str), "a str such as 'bicubic'"),
    "resize_mode": (lambda v: isinstance(v, str), "a str such as 'shortest'"),
    "fill_color": (_byte, "an int in 0..255"),
    "apply_exif_orientation": (lambda v: isinstance(v, bool), "true or false"),
    "alpha_background": (lambda v: v is None or (isinstance(v, list) and len(v) == 3 and all(map(_byte, v))),
                         "null or 3 ints in 0..255"),
    "max_pixels": (lambda v: v is None or (is_int(v) and v >= 1), "null or a positive int"),
}


def check_preprocessing(path, manifest):
    """The image processor's arguments of ``manifest``: ``image_size`` a positive int equal to the spatial size of
    every 4-D graph input, ``mean``/``std`` 3 finite numbers with ``std`` > 0, the other known keys of the types in
    :data:`_PREPROCESSING`; names (``interpolation``…) and unknown keys are left to the processor's ``from_dict``,
    which refuses them with a ConfigError."""
    pre = manifest.get("preprocessing")
    images = [(name, spec["shape"]) for name, graph in manifest["graphs"].items() for spec in graph.get("inputs", [])
              if len(spec["shape"]) == 4]
    if pre is None and not images:
        return
    if not isinstance(pre, dict) or "image_size" not in pre:
        raise ConfigError(f"{path}: preprocessing is {pre!r:.80}, expected an object of image processor arguments "
                          f"with the image_size of the graphs' image inputs")
    for key, (ok, expected) in _PREPROCESSING.items():
        if key in pre and not ok(pre[key]):
            raise ConfigError(f"{path}: preprocessing.{key} is {pre[key]!r:.80}, expected {expected}")
    size = pre.get("image_size")
    for key in ("mean", "std"):
        if key in pre:
            _channels(path, key, pre[key], key == "std")
    for graph_name, shape in images:
        if shape[2:] != [size, size]:
            raise ConfigError(f"{path}: graph {graph_name!r} takes {shape[1:]} images, preprocessing.image_size "
                              f"is {size}")


def _check_specs(path, graph_name, graph, key):
    """``inputs``/``outputs`` of a graph: lists of ``{"name", "shape" (ints >= 1 or "batch"), "dtype"}``."""
    specs = graph.get(key, [])
    ok = isinstance(specs, list) and all(
        isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("dtype"), str)
        and spec["dtype"] in TENSOR_DTYPES and isinstance(spec.get("shape"), list)
        and all(d == "batch" or (is_int(d) and d >= 1) for d in spec["shape"]) for spec in specs)
    if not ok:
        raise ConfigError(f"{path}: graphs.{graph_name}.{key} is {specs!r:.80}, expected a list of "
                          f"{{name, shape (ints >= 1 or 'batch'), dtype (one of {list(TENSOR_DTYPES)})}}")


def _graph_file(directory, path, graph_name, kind, record):
    """The file a graph's ``files.<kind>`` record names, checked to lie inside ``directory`` (no absolute path,
    no ``..``, no symbolic link leading out)."""
    if not isinstance(record, dict) or not isinstance(record.get("path"), str) or not record["path"] or \
            not is_int(record.get("bytes")) or record["bytes"] < 0 or not is_sha256(record.get("sha256")):
        raise ConfigError(f"{path}: graphs.{graph_name}.files.{kind} is {record!r:.80}, expected "
                          "{path, bytes (an int >= 0), sha256 (64 hex digits)}")
    name = PurePosixPath(record["path"])
    if name.is_absolute() or ".." in name.parts or any(c in record["path"] for c in "\\\0:"):   # \, NUL, C:
        raise ConfigError(f"{path}: graph {graph_name!r} names {record['path']!r:.80}, not a relative path inside "
                          "the export directory; graphs must be files inside it")
    target = directory / name
    root = directory.resolve()
    if not target.resolve().is_relative_to(root):
        raise ConfigError(f"{path}: {target} leads outside the export directory (a symbolic link to "
                          f"{target.resolve()}); graphs must be files inside it")
    return target


def read_manifest(directory, fmt=None, verify=True):
    """The manifest of an export directory, checked: its format, and for each graph the file of ``fmt`` (or of
    every format listed) present inside the directory with its recorded size (and sha256 with ``verify``), its
    inputs/outputs and the preprocessing (:func:`check_preprocessing`). Any mismatch is a one-line
    :class:`ConfigError` naming the file and what was expected."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{directory}: not a mindram export directory (no {MANIFEST}); write one with "
                          f"python -m mindram.export --model NAME --output {directory}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:   # UnicodeDecodeError is a ValueError
        raise ConfigError(f"{path}: not valid JSON ({type(e).__name__}: {e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(f"{path}: format {manifest.get('format') if isinstance(manifest, dict) else None!r:.80}, "
                          f"expected {FORMAT!r}")
    graphs = manifest.get("graphs")
    if not isinstance(graphs, dict) or not graphs or not all(isinstance(g, dict) for g in graphs.values()):
        raise ConfigError(f"{path}: key 'graphs' must map graph names to objects, at least one")
    for graph_name, graph in graphs.items():
        files = graph.get("files", {})
        if not isinstance(files, dict):
            raise ConfigError(f"{path}: graphs.{graph_name}.files is {files!r:.80}, expected an object of formats")
        for key in ("inputs", "outputs"):
            _check_specs(path, graph_name, graph, key)
        wanted = ([fmt] + [f"{fmt}_data"] * (f"{fmt}_data" in files)) if fmt else list(files)
        for kind in wanted:
            if kind not in files:
                raise ConfigError(f"{path}: graph {graph_name!r} has no {kind} file (it has {sorted(files)}); "
                                  f"export it with --format {kind}")
            record = files[kind]
            target = _graph_file(directory, path, graph_name, kind, record)
            if not target.is_file():
                raise ConfigError(f"{target}: listed in {path} but missing")
            if target.stat().st_size != record["bytes"]:
                raise ConfigError(f"{target}: {target.stat().st_size} bytes, {path} records {record['bytes']}; "
                                  "the export is incomplete or was changed — export again")
            if verify and file_sha256(target) != record["sha256"]:
                raise ConfigError(f"{target}: sha256 differs from the one recorded in {path}; the file was "
                                  "changed — export again")
    check_preprocessing(path, manifest)
    return manifest

"""Model inputs written to disk for an inference tool: the preprocessing step of the Ascend offline guide (its
``openclip_preprocess.py``), whose files ais_bench reads with ``--input <folder>``.

Layout of ``out_dir``::

    images/<name>.npy      float32 (3, S, S): one image preprocessed as the model's weights expect
    texts/<name>.npy       int64 (L,) token ids of one text (int32 when the export's text tower takes int32)
    inputs.json            what was written: format, file format, and per kind the shape, dtype, preprocessing
    images/errors.jsonl    items that could not be read, skipped (one JSON line each; texts/ likewise)

``file_format="bin"`` writes the same arrays as raw bytes (``<name>.bin``: C order, no header), which ais_bench
feeds to the model as they are. Names are flat (ais_bench reads one folder level) and hold no ``.``: ais_bench
names each output after its input's name up to the first ``.`` (``<name>_0.npy``), so a name with a dot could
collide with another's output. The guide's names, images ``<stem>`` and captions ``<stem>_<k>``, make the vectors
ais_bench writes pair by name (:func:`mindram.embeddings.recall_at_k`).

Resumable: an item whose file exists is skipped. A folder written with other settings (size, dtype, file format),
or holding ``.npy``/``.bin`` files but no ``inputs.json``, is refused unless ``overwrite``, which removes the
``.npy``/``.bin`` files of ``images/`` and ``texts/`` first and writes every item again. Every file is written through :func:`~mindram.utils.io.atomic_write`; temporaries of a killed run
are removed first (ais_bench would read them as inputs).
"""
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..utils.io import atomic_write

logger = logging.getLogger(__name__)

FORMAT = "mindram-model-inputs/1"
FILE_FORMATS = ("npy", "bin")
INPUTS_JSON = "inputs.json"
BAD_NAME = re.compile(r"[./\\]|^$")


def check_input_names(names, kind):
    """``names`` as strings, each usable as an ais_bench input name (no ``.``, ``/``, ``\\``; not empty) and
    unique; otherwise a DataError naming the first offenders."""
    names = [str(n) for n in names]
    bad = [n for n in names if BAD_NAME.search(n)]
    if bad:
        raise DataError(f"{kind} input name {bad[0]!r} ({len(bad)} such): a name must be flat and hold no '.', as "
                        f"ais_bench names each output after the input's name up to its first '.'; rename the file")
    seen, twice = set(), []
    for name in names:
        if name in seen:
            twice.append(name)
        seen.add(name)
    if twice:
        raise DataError(f"{kind} input name {twice[0]!r} is used by {names.count(twice[0])} items "
                        f"({len(set(twice))} such names): the folder is flat, so files of the same name in different "
                        f"sub-folders collide; rename them")
    return names


def text_input_dtype(model):
    """The token id dtype the model's text tower takes: an export's recorded input dtype, else int64 (the guide's)."""
    for graph in getattr(model, "manifest", {}).get("graphs", {}).values():
        if graph.get("tower") == "text":
            return graph["inputs"][0]["dtype"]
    return "int64"


def _settings(model, file_format, processor, dtype):
    return {"format": FORMAT, "file_format": file_format,
            "images": {"shape": [3, processor.image_size, processor.image_size], "dtype": "float32",
                       "preprocessing": processor.to_dict()},
            "texts": {"shape": [int(model.context_length)], "dtype": dtype}}


def _input_files(out_dir):
    return [f for kind in ("images", "texts") for ext in FILE_FORMATS for f in (out_dir / kind).glob(f"*.{ext}")]


def _prepare(out_dir, settings, overwrite):
    """Check ``out_dir`` against ``settings`` (or start it again with ``overwrite``) and record them."""
    for kind in ("images", "texts"):
        for stale in (out_dir / kind).glob(".*.tmp*"):  # temporaries of a killed run: ais_bench would read them
            stale.unlink()
    path = out_dir / INPUTS_JSON
    if overwrite:  # start again: a stale input left beside the new ones would be read by ais_bench too
        old = _input_files(out_dir)
        for f in old:
            f.unlink()
        if old:
            logger.info("overwrite: removed %d input files of %s", len(old), out_dir)
    elif path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise DataError(f"{path}: not valid JSON ({e}); use another output folder or --overwrite") from e
        diff = [k for k in settings if old.get(k) != settings[k]] if isinstance(old, dict) else ["(not an object)"]
        if diff:
            raise DataError(f"{out_dir} holds model inputs written with other settings (differ in {diff}); use "
                            f"another output folder or --overwrite (overwrite=True) to write them again")
        logger.info("resuming the model inputs in %s", out_dir)
    elif _input_files(out_dir):
        raise DataError(f"{out_dir} holds .npy/.bin files but no {INPUTS_JSON} (not written by this step); use "
                        f"another output folder or --overwrite (overwrite=True) to replace them")
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=1)


def _write_array(path, array, file_format):
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        if file_format == "npy":
            np.save(f, array)
        else:
            f.write(np.ascontiguousarray(array).tobytes())


def _write_errors(folder, errors):
    with atomic_write(folder / "errors.jsonl", allow_empty=True) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in errors:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_kind(folder, items, names, load, file_format, num_workers):
    from ..pipeline.base import ITEM_ERRORS  # pylint: disable=import-outside-toplevel  # MindSpore: at first use
    """Write ``load(item)`` of every item whose file is missing; ``(written, errors)``."""
    folder.mkdir(parents=True, exist_ok=True)
    todo = [i for i, name in enumerate(names) if not (folder / f"{name}.{file_format}").is_file()]

    def one(i):
        try:
            return load(items[i]), None
        except ITEM_ERRORS as e:
            return None, f"{type(e).__name__}: {e}"

    errors, written = [], 0
    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        for i, (array, error) in zip(todo, pool.map(one, todo)):
            if error is not None:
                logger.warning("skipping %s %d (%s): %s", folder.name, i, names[i], error)
                errors.append({"id": names[i], "index": i, "error": error})
                continue
            _write_array(folder / f"{names[i]}.{file_format}", array, file_format)
            written += 1
    _write_errors(folder, errors)
    return {"num_items": len(items), "num_written": written, "num_errors": len(errors),
            "skipped_existing": len(items) - len(todo), "out_dir": str(folder)}


def write_model_inputs(model, out_dir, images=(), image_names=None, texts=(), text_names=None, file_format="npy",
                       overwrite=False, num_workers=0):
    """Preprocess ``images`` and tokenize ``texts`` into ``out_dir/images`` and ``out_dir/texts`` (module docstring).

    Args:
        model: a CLIP model or an ONNX Runtime export (``load_backend``): its image preprocessing, context length
            and, for an export, its text input dtype.
        images: image paths (or PIL images/arrays, with ``image_names``); image_names: one flat name each (default:
            the file name without its suffix).
        texts: strings; text_names: one flat name each (default: the position, ``0``, ``1``, ...); the guide's
            captions are ``<image name>_<k>``.
        file_format: ``"npy"`` (the guide's) or ``"bin"`` (raw bytes).
        overwrite: remove the input files already in ``out_dir`` and write every item again.
        num_workers: threads decoding images (0: one).

    Returns:
        ``{"images": summary, "texts": summary}`` for the kinds given; a summary has ``num_items``, ``num_written``,
        ``num_errors`` (skipped, listed in ``errors.jsonl``) and ``skipped_existing``.
    """
    if file_format not in FILE_FORMATS:
        raise DataError(f"file format {file_format!r}: expected one of {FILE_FORMATS}")
    images, texts = list(images), list(texts)
    image_names = check_input_names([Path(str(p)).stem for p in images] if image_names is None else image_names,
                                    "image")
    text_names = check_input_names([str(i) for i in range(len(texts))] if text_names is None else text_names, "text")
    if len(image_names) != len(images) or len(text_names) != len(texts):
        raise ValueError(f"one name per item expected: {len(images)} images, {len(image_names)} names; "
                         f"{len(texts)} texts, {len(text_names)} names")
    from ..models.clip.zero_shot import tokenize_with  # pylint: disable=import-outside-toplevel
    from ..pipeline.base import build_image_processor  # pylint: disable=import-outside-toplevel
    out_dir = Path(out_dir)
    processor = build_image_processor(model)
    dtype = text_input_dtype(model)
    _prepare(out_dir, _settings(model, file_format, processor, dtype), overwrite)

    def tokenize(text):
        if not isinstance(text, str):
            raise TypeError(f"a text must be a str, got {type(text).__name__}")
        return tokenize_with(None, [text], model.context_length)[0].astype(dtype)

    summary = {}
    if images:
        summary["images"] = _write_kind(out_dir / "images", images, image_names,
                                        lambda image: processor.preprocess(image).astype(np.float32),
                                        file_format, num_workers)
    if texts:
        summary["texts"] = _write_kind(out_dir / "texts", texts, text_names, tokenize, file_format, 1)
    for kind, s in summary.items():
        logger.info("%s inputs in %s: %d written, %d skipped as unreadable, %d already there", kind, s["out_dir"],
                    s["num_written"], s["num_errors"], s["skipped_existing"])
    return summary

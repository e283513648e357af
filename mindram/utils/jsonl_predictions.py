"""Predictions over many images streamed to a JSON-lines file, resumable after a kill.

``expand_inputs`` turns directories into their image files (recursive, sorted, by extension) and keeps paths
and URLs as given; ``predict_to_jsonl`` runs ``predict_chunk`` over the inputs in chunks and appends one line
per input (``{"input": ..., ...}``), flushed and fsynced after every chunk. Run again with the same output, it
skips the inputs already written (a line cut short by a kill is dropped first) and goes on, so a killed job
loses at most one chunk of work and never writes an input twice.
"""
import json
import logging
import os
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import DataError
from .image_files import list_image_files

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def expand_inputs(items, follow_symlinks=False):
    """Each directory replaced by its image files (recursive, sorted by path, suffixes :data:`IMAGE_SUFFIXES`
    in any case; a symbolic link leading out of the directory is skipped with a warning, see
    :func:`~mindram.utils.image_files.list_image_files`, unless ``follow_symlinks``); other items (files, URLs)
    kept: a file named on its own is read wherever it leads. DataError for a directory without images."""
    out = []
    for item in items:
        path = Path(os.fspath(item)).expanduser() if isinstance(item, (str, os.PathLike)) else None
        if path is not None and path.is_dir():
            files = sorted(str(p) for p in list_image_files(path, IMAGE_SUFFIXES, follow_symlinks=follow_symlinks))
            if not files:
                raise DataError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the directory or below")
            out.extend(files)
        else:
            out.append(os.fspath(item) if isinstance(item, os.PathLike) else item)
    return out


def _written_inputs(output):
    """Inputs already in ``output``; a last line without its newline (a write cut short) is truncated away."""
    if not output.exists():
        return set()
    data = output.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        logger.warning("%s: dropping an incomplete last line (%d bytes) left by an interrupted run", output,
                       len(data) - keep)
        with open(output, "r+b") as f:
            f.truncate(keep)
    done = set()
    for lineno, line in enumerate(data[:keep].decode("utf-8").splitlines(), 1):
        try:
            done.add(json.loads(line)["input"])
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{output}:{lineno}: not a prediction line of this tool; pass another output "
                            "file") from None
    return done


def predict_to_jsonl(predict_chunk, inputs, output, chunk_size=32):
    """Append one JSON line per input of ``inputs`` not yet in ``output``; returns a summary.

    ``predict_chunk(items) -> [line dict per item]``: each line holds ``"input"`` and the prediction, or an
    ``"error"`` for an input that could not be used (counted in ``num_failed``).
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    done = _written_inputs(output)
    todo = [item for item in dict.fromkeys(inputs) if item not in done]
    failed = 0
    with open(output, "a", encoding="utf-8") as f, tqdm(total=len(todo), desc="predict", unit="image") as bar:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            lines = predict_chunk(chunk)
            if len(lines) != len(chunk):
                raise RuntimeError(f"predict_chunk returned {len(lines)} lines for {len(chunk)} inputs")
            f.write("".join(json.dumps(line, ensure_ascii=False, default=float) + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
            failed += sum("error" in line for line in lines)
            bar.update(len(chunk))
    return {"output": str(output), "num_inputs": len(set(inputs)), "num_already_written": len(done & set(inputs)),
            "num_written": len(todo), "num_failed": failed}

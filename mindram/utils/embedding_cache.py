"""Disk cache of text embeddings computed from a model's weights (open-set tag embeddings, zero-shot
classifiers): the key is a sha256 over everything the result depends on — the parameters of the tower that
computed it (names, dtypes, shapes, bytes: replaced weights at the same path or an in-memory model get their
own entry) and the caller's recipe (texts, templates, context length, version) — and the file name starts
with a readable label. Files are written atomically; an unreadable or mismatching file is rebuilt with a
warning; a cache that cannot be written only costs a warning.
"""
import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np

from .io import atomic_write

logger = logging.getLogger(__name__)


def weights_digest(cell):
    """sha256 over the names, dtypes, shapes and bytes of ``cell``'s parameters, in name order."""
    digest = hashlib.sha256()
    for param in sorted(cell.get_parameters(), key=lambda p: p.name):
        value = np.ascontiguousarray(param.asnumpy())
        digest.update(f"{param.name}|{value.dtype.str}|{value.shape}|".encode("utf-8"))
        digest.update(value.tobytes())
    return digest.hexdigest()


def cache_label(name, default="model"):
    """A file-name-safe label of a model name or path: its last component, other characters replaced by '_'."""
    label = re.sub(r"[^A-Za-z0-9_.+-]+", "_", Path(str(name)).name if name else "").strip("._")[:64]
    return label or default


def cache_file(folder, label, key):
    """``folder/<label>-<sha256 of the JSON of key>.npy``."""
    digest = hashlib.sha256(json.dumps(key, ensure_ascii=False).encode("utf-8")).hexdigest()
    return Path(folder) / f"{label}-{digest}.npy"


def read_cached(path, shape, what="embeddings"):
    """The cached float32 array of shape ``shape`` (None entries match any size), or None when the file is
    missing or unusable (then a warning says why: it is rebuilt)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        problem = f"is unreadable ({type(e).__name__}: {e})"
    else:
        fits = array.ndim == len(shape) and all(want is None or got == want for got, want in zip(array.shape, shape))
        if array.dtype == np.float32 and fits and np.isfinite(array).all():
            logger.info("%s from cache %s", what, path)
            return array
        problem = f"holds {array.dtype} {array.shape}, expected finite float32 {tuple(shape)}"
    logger.warning("%s cache %s %s; rebuilding it", what, path, problem)
    return None


def write_cached(path, array, what="embeddings"):
    """Write ``array`` to ``path`` atomically; a failure is a warning (the result is used uncached)."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            np.save(tmp, array)
    except OSError as e:
        logger.warning("%s cache %s not written (%s: %s); the result is used uncached", what, path,
                       type(e).__name__, e)

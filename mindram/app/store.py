"""The search tab's image store: an image export of :func:`mindram.embeddings.write_embeddings` (or of
``scripts/export_embeddings.py``, whose ``OUT/images`` it finds from ``OUT``) and where its images are.

Image ids are paths: absolute ones are used as they are, relative ones (the export script's, relative to its
``--images`` folder) are looked up under ``image_root``.
"""
import logging
from pathlib import Path

from ..embeddings import RetrievalIndex
from ..embeddings.store import read_manifest
from ..errors import ConfigError

logger = logging.getLogger(__name__)


def find_export(path):
    """The export folder (holding ``manifest.json``) of ``path``: the folder itself or its ``images/``."""
    path = Path(path).expanduser()
    for candidate in (path, path / "images"):
        if (candidate / "manifest.json").is_file():
            return candidate
    raise ConfigError(f"--store {path}: no manifest.json there or in {path / 'images'}; give the output folder of "
                      f"scripts/export_embeddings.py (--images ... --out DIR) or of write_embeddings")


class ImageStore:
    """Exact nearest-neighbour search over an image export; ``search(vector, k)`` → rows for display."""

    def __init__(self, path, image_root=None):
        self.export_dir = find_export(path)
        manifest = read_manifest(self.export_dir)   # checked: a corrupt manifest is a one-line DataError
        if manifest.get("kind") != "image":
            raise ConfigError(f"--store {self.export_dir} holds {manifest.get('kind')!r} embeddings; the search tab "
                              f"needs an image export (scripts/export_embeddings.py --images ...)")
        self.model_name = manifest.get("model")
        self.index = RetrievalIndex.from_dir(self.export_dir)
        if not len(self.index):
            raise ConfigError(f"--store {self.export_dir} holds no vectors (every image was skipped or the export "
                              f"has not run); see its errors.jsonl")
        self.image_root = Path(image_root).expanduser() if image_root is not None else Path.cwd()

    def __len__(self):
        return len(self.index)

    def check_width(self, width):
        """ConfigError unless the store's vectors have the query model's ``width``."""
        stored = self.index.vectors.shape[1]
        if stored != width:
            raise ConfigError(f"--store {self.export_dir} holds {stored}-d vectors (model {self.model_name}) but the "
                              f"CLIP of --clip gives {width}-d ones; export the store with the same CLIP")

    def image_path(self, item_id):
        """The file of ``item_id``, or None when it does not exist."""
        path = Path(item_id)
        path = path if path.is_absolute() else self.image_root / path
        return path if path.is_file() else None

    def search(self, vector, k):
        """``[{'rank', 'id', 'score', 'path'}]``: the ``k`` nearest images of one query vector ``(1, D)``."""
        scores, indices = self.index.search(vector, k=int(k))
        rows = []
        for rank, (score, row) in enumerate(zip(scores[0].tolist(), indices[0].tolist()), 1):
            item_id = self.index.ids[row]
            rows.append({"rank": rank, "id": item_id, "score": float(score), "path": self.image_path(item_id)})
        missing = [r["id"] for r in rows if r["path"] is None]
        if missing:
            logger.warning("%d result image(s) not found under %s (first: %s); start the app with --image_root "
                           "set to the folder the store was exported from", len(missing), self.image_root, missing[0])
        return rows

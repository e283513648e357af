"""Nearest-neighbour search over embeddings (faiss ``IndexFlatIP`` when installed, numpy otherwise) and
retrieval recall@K of two exports.

Both backends compute exact inner-product search and return the same neighbours; with normalised vectors
(the default of :func:`~mindram.embeddings.write_embeddings`) the inner product is the cosine similarity.
faiss is optional (``pip install faiss-cpu`` / ``mindram[faiss]``); the numpy backend scores ``chunk_size``
queries at a time and breaks exact ties by the lower index.
"""
import logging
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..metrics import retrieval_recall_at_k
from .npy_dir import load_npy_dir, looks_like_ais_bench, pair_captions_by_name, strip_output_index
from .writer import load_embeddings

logger = logging.getLogger(__name__)
BACKENDS = ("auto", "faiss", "numpy")


def _faiss():
    try:
        import faiss  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return faiss


def _as_matrix(value, name):
    value = value.asnumpy() if hasattr(value, "asnumpy") else value
    value = np.ascontiguousarray(value, dtype=np.float32)
    if value.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {value.shape}")
    return value


class RetrievalIndex:
    """Exact inner-product index: ``RetrievalIndex(vectors).search(queries, k) -> (scores, indices)``.

    Args:
        vectors: ``(N, D)`` database vectors.
        ids: optional ids of the rows (``index.ids[j]``), e.g. from :func:`load_embeddings`.
        backend: ``"auto"`` (faiss if importable), ``"faiss"`` (error if missing) or ``"numpy"``.
        chunk_size: numpy backend: queries scored at a time.
    """

    def __init__(self, vectors, ids=None, backend="auto", chunk_size=1024):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.vectors = _as_matrix(vectors, "vectors")
        if ids is not None and len(ids) != len(self.vectors):
            raise ValueError(f"got {len(ids)} ids for {len(self.vectors)} vectors")
        self.ids = list(ids) if ids is not None else None
        self.chunk_size = int(chunk_size)
        faiss = _faiss() if backend != "numpy" else None
        if backend == "faiss" and faiss is None:
            raise ImportError("backend='faiss' needs the faiss package: pip install faiss-cpu")
        self.backend = "faiss" if faiss is not None else "numpy"
        self._faiss_index = None
        if faiss is not None:
            self._faiss_index = faiss.IndexFlatIP(self.vectors.shape[1])
            self._faiss_index.add(self.vectors)

    @classmethod
    def from_dir(cls, out_dir, **kwargs):
        """Index of an export written by :func:`~mindram.embeddings.write_embeddings`."""
        ids, vectors = load_embeddings(out_dir)
        return cls(vectors, ids=ids, **kwargs)

    def __len__(self):
        return len(self.vectors)

    def search(self, queries, k=10):
        """The ``k`` best rows per query: ``(scores (Q, k) float32, indices (Q, k) int64)``, best first.

        ``k`` larger than the index is reduced to its size.
        """
        queries = _as_matrix(queries, "queries")
        if queries.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"queries have width {queries.shape[1]}, the index {self.vectors.shape[1]}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"k must be a positive int, got {k!r}")
        k = min(int(k), len(self.vectors))
        if k == 0 or len(queries) == 0:
            return np.zeros((len(queries), k), np.float32), np.zeros((len(queries), k), np.int64)
        if self._faiss_index is not None:
            scores, indices = self._faiss_index.search(queries, k)
            return scores.astype(np.float32), indices.astype(np.int64)
        scores, indices = [], []
        for s in range(0, len(queries), self.chunk_size):
            sim = queries[s:s + self.chunk_size] @ self.vectors.T
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < sim.shape[1] else \
                np.broadcast_to(np.arange(sim.shape[1]), sim.shape)
            top_scores = np.take_along_axis(sim, top, axis=1)
            order = np.lexsort((top, -top_scores), axis=1)  # by score desc, then index asc
            indices.append(np.take_along_axis(top, order, axis=1))
            scores.append(np.take_along_axis(top_scores, order, axis=1))
        return np.concatenate(scores).astype(np.float32), np.concatenate(indices).astype(np.int64)


def _load_vectors(path, follow_symlinks):
    """``(ids, vectors)`` of an export (``manifest.json``) or of a folder of ``.npy`` vector files."""
    if (Path(path) / "manifest.json").is_file():
        return load_embeddings(path)
    return load_npy_dir(path, follow_symlinks=follow_symlinks)


def _first(names, count=3):
    return ", ".join(map(str, names[:count])) + (", ..." if len(names) > count else "")


def _rows_by_name(image_ids, text_ids, image_dir, text_dir):
    """Per caption the row of its image by the guide's naming (None: no such image); ais_bench's output index
    ``_0`` is removed first when both folders carry it (:func:`.npy_dir.looks_like_ais_bench`)."""
    image_keys, text_keys = image_ids, text_ids
    if looks_like_ais_bench(image_ids, text_ids):
        logger.info("%s and %s hold ais_bench outputs (<input name>_0.npy): paired without the output index _0",
                    image_dir, text_dir)
        image_keys, text_keys = strip_output_index(image_ids), strip_output_index(text_ids)
    pairs = pair_captions_by_name(text_keys, image_keys)
    row_of = {key: row for row, key in reversed(list(enumerate(image_keys)))}
    return [row_of.get(pairs.get(key)) for key in text_keys]


def recall_at_k(image_dir, text_dir, text_to_image_id=None, ks=(1, 5, 10), allow_unpaired=False,
                follow_symlinks=False):
    """Retrieval recall@K of an image export and a caption export (see :mod:`mindram.metrics.retrieval`).

    Args:
        image_dir, text_dir: exports written by ``write_embeddings`` (kind image and text), or folders of
            one ``.npy`` vector per file (the seeds' layout, vectors made elsewhere, ais_bench's outputs).
        text_to_image_id: ``{text id: image id}`` pairing each caption with its image; None pairs by the
            seeds' file naming, caption ``<stem>_<k>`` with image ``<stem>`` (:func:`.npy_dir.pair_captions_by_name`),
            after removing ais_bench's output index ``_0`` when every file of both folders has it.
        ks: the k values.
        allow_unpaired: leave out captions without an image (and keep images without a caption as gallery
            items only: they stay candidates of text->image search and are left out of image->text recall),
            with a warning. Without it any of them is a DataError naming the first few: a metric is never
            computed on a set other than the one given.
        follow_symlinks: read ``.npy`` links that lead out of a vector folder (default: skipped with a warning).
    """
    image_ids, images = _load_vectors(image_dir, follow_symlinks)
    text_ids, texts = _load_vectors(text_dir, follow_symlinks)
    if text_to_image_id is None:
        image_rows = _rows_by_name(image_ids, text_ids, image_dir, text_dir)
        how = "captions pair with images by file name, <stem>_<k> with <stem>"
    else:
        row_of = {image_id: row for row, image_id in reversed(list(enumerate(image_ids)))}
        image_rows = [row_of.get(text_to_image_id.get(text_id)) for text_id in text_ids]
        how = "captions pair with images by the caption file"
    unpaired = [text_id for text_id, row in zip(text_ids, image_rows) if row is None]
    captioned = {row for row in image_rows if row is not None}
    uncaptioned = [image_id for row, image_id in enumerate(image_ids) if row not in captioned]
    problems = []
    if unpaired:
        problems.append(f"{len(unpaired)} of {len(text_ids)} captions in {text_dir} have no image in {image_dir} "
                        f"(first: {_first(unpaired)})")
    if uncaptioned:
        problems.append(f"{len(uncaptioned)} of {len(image_ids)} images in {image_dir} have no caption in "
                        f"{text_dir} (first: {_first(uncaptioned)})")
    if problems and not allow_unpaired:
        raise DataError(f"{'; '.join(problems)}; {how}. Pass --allow_unpaired (allow_unpaired=True) to leave "
                        f"them out of the metrics")
    if problems:
        logger.warning("%s: captions without an image are left out, images without a caption stay in the gallery "
                       "only (allow_unpaired)", "; ".join(problems))
    keep = [row for row, image_row in enumerate(image_rows) if image_row is not None]
    if not keep:
        raise DataError(f"no caption of {text_dir} pairs with an image of {image_dir} ({how})")
    t2i = np.asarray([image_rows[row] for row in keep], np.int64)
    return retrieval_recall_at_k(images, texts[keep], t2i, ks)

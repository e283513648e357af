"""Offline vector inference: sharded, atomic, resumable embedding export; the seeds' per-file ``.npy`` layout;
exact retrieval index (faiss optional)."""
from ..utils.lazy import lazy_exports

_EXPORTS = {
    "RetrievalIndex": ".index", "recall_at_k": ".index",
    "load_npy_dir": ".npy_dir", "pair_captions_by_name": ".npy_dir", "strip_output_index": ".npy_dir",
    "write_npy_dir": ".npy_dir",
    "load_embeddings": ".writer", "write_embeddings": ".writer",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["write_embeddings", "load_embeddings", "RetrievalIndex", "recall_at_k", "load_npy_dir", "write_npy_dir",
           "pair_captions_by_name", "strip_output_index"]

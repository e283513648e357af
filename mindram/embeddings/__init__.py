"""Offline vector inference: sharded, atomic, resumable embedding export; the seeds' per-file ``.npy`` layout;
exact retrieval index (faiss optional)."""
from .index import RetrievalIndex, recall_at_k
from .npy_dir import load_npy_dir, pair_captions_by_name, write_npy_dir
from .writer import load_embeddings, write_embeddings

__all__ = ["write_embeddings", "load_embeddings", "RetrievalIndex", "recall_at_k", "load_npy_dir", "write_npy_dir",
           "pair_captions_by_name"]

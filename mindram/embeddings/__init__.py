"""Offline vector inference: sharded, atomic, resumable embedding export; exact retrieval index (faiss optional)."""
from .index import RetrievalIndex, recall_at_k
from .writer import load_embeddings, write_embeddings

__all__ = ["write_embeddings", "load_embeddings", "RetrievalIndex", "recall_at_k"]

"""Small shared helpers (atomic file writes, paths)."""
from .io import atomic_write, mindram_home

__all__ = ["atomic_write", "mindram_home"]

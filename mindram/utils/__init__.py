"""Small shared helpers (atomic file writes, paths, array helpers)."""
from .arrays import l2_normalize
from .io import atomic_write, mindram_home

__all__ = ["atomic_write", "l2_normalize", "mindram_home"]

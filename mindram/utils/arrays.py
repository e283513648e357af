"""Numpy helpers shared by models, metrics, tasks and pipelines (the graph-side counterpart of
:func:`l2_normalize` on MindSpore tensors is ``mindram.models.clip.modeling.l2_normalize``)."""
import numpy as np


def l2_normalize(x, eps=1e-12):
    """``x / max(‖x‖, eps)`` over the last axis, as float32 (torch ``F.normalize``)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), np.float32(eps))

"""Host-side window geometry of a Swin block for any token map (docs/ram.md#input-resolution).

A block has a window side ``w`` fixed by its relative-position bias table ((2w−1)² rows, from the
configured resolution) and is *shifted* (odd blocks) or not. For a map of ``height`` × ``width`` tokens
:func:`window_plan` applies the reference's build-time rule at run time, per axis:

- an axis not longer than ``w`` is one window of the axis' own length, never shifted (the reference
  makes a map not larger than the window one window without shift); its bias entries are the
  sub-table of the relative offsets that occur, so the pretrained table stays valid;
- a longer axis is padded at its end to a multiple of ``w`` and, in a shifted block, rolled by −w//2.

Padded positions are masked out of attention as keys: every position gets a region label (the
reference's 3 × 3 shifted regions of the padded map, computed for the padded size, or one region
without shift) and padding gets a label of its own, and token pairs with different labels get −100
added to their score (the reference's value for shifted regions). A real token therefore attends to
exactly the real tokens of its window and region, whatever the padding holds. (torchvision's and
Hugging Face's Swin pad with zeros and mask only the shift regions, so there the padding takes part
in attention as keys.) At the configured resolution nothing is padded and the plan is the reference's.

Plans are cached per (height, width, window, shifted): they are numpy arrays computed once per input
shape, and the model turns them into constant tensors (``modeling.py``).
"""
import dataclasses
import functools
from typing import Optional

import numpy as np

MASK_VALUE = -100.0  # the reference's value for token pairs from different regions (not -inf)
PAD_LABEL = -1


@dataclasses.dataclass(frozen=True)
class WindowPlan:
    """Window geometry of one block on one map (arrays are read-only).

    ``to_windows``: (padded_h·padded_w,) index into the h·w tokens followed by one padding token (index
    h·w) that lists the tokens in window order (windows in raster order, tokens row-major inside one),
    or None when that order is the identity. ``from_windows``: (h·w,) position of each token in window
    order (None with ``to_windows``). ``mask``: (num_windows, N, N) additive mask or None.
    ``bias_index``: (N·N,) rows of the bias table for the window's token pairs.
    """

    window: tuple
    padded: tuple
    shift: tuple
    to_windows: Optional[np.ndarray]
    from_windows: Optional[np.ndarray]
    mask: Optional[np.ndarray]
    bias_index: np.ndarray

    @property
    def window_tokens(self):
        return self.window[0] * self.window[1]


def _axis(size, window, shifted):
    """(window extent, padded size, shift) of one axis."""
    if size <= window:
        return size, size, 0
    return window, -(-size // window) * window, window // 2 if shifted else 0


def _partition(grid, window):
    """(H, W) array → (num_windows, wh·ww) in window order."""
    (rows, cols), (wh, ww) = grid.shape, window
    return grid.reshape(rows // wh, wh, cols // ww, ww).transpose(0, 2, 1, 3).reshape(-1, wh * ww)


def _region_labels(padded, window, shift):
    """Per position of the rolled padded map: the reference's region index (3 × 3 slices along shifted axes)."""
    labels = []
    for size, win, sh in zip(padded, window, shift):
        axis = np.zeros(size, np.int64)
        if sh:
            axis[size - win:size - sh] = 1
            axis[size - sh:] = 2
        labels.append(axis)
    return 3 * labels[0][:, None] + labels[1][None, :]


def relative_position_index(window, extent=None):
    """(N, N) rows of the ((2w−1)², heads) bias table for the N = eh·ew tokens (row-major) of an
    ``extent`` = (eh, ew) window (default w × w) of a block whose window side is ``window``."""
    eh, ew = (window, window) if extent is None else extent
    coords = np.stack(np.meshgrid(np.arange(eh), np.arange(ew), indexing="ij")).reshape(2, -1)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)
    return rel[0] * (2 * window - 1) + rel[1]


@functools.lru_cache(maxsize=64)
def window_plan(height, width, window, shifted):
    """:class:`WindowPlan` of a block with window side ``window`` (shifted or not) on a height × width map."""
    if min(height, width, window) < 1:
        raise ValueError(f"window_plan: need a non-empty map and window, got {height}x{width}, window {window}")
    axes = [_axis(height, window, shifted), _axis(width, window, shifted)]
    extent, padded, shift = (tuple(a[i] for a in axes) for i in range(3))
    tokens = height * width
    grid = np.full(padded, tokens, np.int64)  # the padding token's index
    grid[:height, :width] = np.arange(tokens).reshape(height, width)
    rolled = np.roll(grid, (-shift[0], -shift[1]), axis=(0, 1))
    windows = _partition(rolled, extent)
    order = windows.reshape(-1)
    identity = order.size == tokens and np.array_equal(order, np.arange(tokens))
    labels = np.where(windows == tokens, PAD_LABEL, _partition(_region_labels(padded, extent, shift), extent))
    differs = labels[:, None, :] != labels[:, :, None]
    mask = np.where(differs, MASK_VALUE, 0.0).astype(np.float32) if differs.any() else None
    to_windows = from_windows = None
    if not identity:
        real = np.flatnonzero(order < tokens)
        from_windows = np.empty(tokens, np.int64)
        from_windows[order[real]] = real
        to_windows, from_windows = order.astype(np.int32), from_windows.astype(np.int32)
    bias_index = relative_position_index(window, extent).reshape(-1).astype(np.int32)
    for array in (to_windows, from_windows, mask, bias_index):
        if array is not None:
            array.flags.writeable = False
    return WindowPlan(extent, padded, shift, to_windows, from_windows, mask, bias_index)


def window_order(resolution, window, shift):
    """Token permutation of a block on a square map whose side is a multiple of ``window``: entry t is the
    raster index of the token at position t after the cyclic shift by −shift and the window partition."""
    grid = np.arange(resolution * resolution).reshape(resolution, resolution)
    grid = np.roll(grid, (-shift, -shift), axis=(0, 1))
    return _partition(grid, (window, window)).reshape(-1)


def shifted_window_mask(resolution, window, shift):
    """(nW, N, N) additive mask of a shifted block on a square map (a multiple of ``window``): 0 inside a
    region, −100 across regions — the reference's ``attn_mask`` buffer."""
    labels = _partition(_region_labels((resolution, resolution), (window, window), (shift, shift)),
                        (window, window))
    return np.where(labels[:, None, :] != labels[:, :, None], MASK_VALUE, 0.0).astype(np.float32)


@functools.lru_cache(maxsize=64)
def bicubic_resize_matrix(src, dst):
    """(dst, src) matrix of torch's ``interpolate(mode="bicubic", align_corners=False)`` along one axis
    (cubic convolution with A = −0.75, source indices clamped at the borders); used to resize an absolute
    position embedding learnt on a src × src grid."""
    a = -0.75
    matrix = np.zeros((dst, src), np.float64)
    for out in range(dst):
        real = (out + 0.5) * src / dst - 0.5
        base = int(np.floor(real))
        t = real - base
        for offset, dist in zip((-1, 0, 1, 2), (1 + t, t, 1 - t, 2 - t)):
            if dist <= 1:
                weight = ((a + 2) * dist - (a + 3)) * dist * dist + 1
            else:
                weight = ((a * dist - 5 * a) * dist + 8 * a) * dist - 4 * a
            matrix[out, min(max(base + offset, 0), src - 1)] += weight
    matrix = matrix.astype(np.float32)
    matrix.flags.writeable = False
    return matrix

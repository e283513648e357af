"""Seedable weight initialisation: every initialiser draws from a generator seeded off NumPy's global
state, so ``np.random.seed(s)`` (the Trainer does it from the config's ``seed``) fixes all initial weights.

Every weight is created through :func:`init_parameter`, so that :func:`no_init_weights` can skip computing
values a checkpoint is about to replace (``from_pretrained`` builds the model inside it): a CLIP ViT-B/32 is
600 MB of random numbers that would be thrown away, and held beside the loaded weights at the peak.
"""
import contextlib
import contextvars

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor
from mindspore.common.initializer import initializer

_SKIP_INIT = contextvars.ContextVar("mindram_skip_init", default=False)


def init_rng():
    """A fresh ``np.random.Generator`` whose seed comes from the global NumPy RNG."""
    return np.random.default_rng(int(np.random.randint(0, 2 ** 31 - 1)))


@contextlib.contextmanager
def no_init_weights():
    """Within the block (this thread/context only), :func:`init_parameter` makes parameters without computing
    their values: MindSpore allocates them lazily, zero-filled. Use it only for a model whose every parameter
    is loaded next (strictly); the global NumPy RNG advances exactly as in a normal build."""
    token = _SKIP_INIT.set(True)
    try:
        yield
    finally:
        _SKIP_INIT.reset(token)


def init_parameter(shape, fill, name=None, requires_grad=True):
    """A float32 :class:`~mindspore.Parameter` of ``shape`` (a tuple, or an int for 1-d) holding ``fill()`` (a callable returning an array of
    that shape), or, inside :func:`no_init_weights`, uninitialised (lazy zeros) without calling ``fill``."""
    shape = (int(shape),) if np.isscalar(shape) else tuple(int(d) for d in shape)
    if _SKIP_INIT.get():
        data = initializer("zeros", shape, ms.float32)
    else:
        data = Tensor(np.asarray(fill(), np.float32).reshape(shape))
    return Parameter(data, name=name, requires_grad=requires_grad)


def normal_parameter(shape, std, rng=None, name=None):
    """:func:`init_parameter` drawn N(0, std²) from ``rng`` (default: a fresh :func:`init_rng`, made now)."""
    rng = init_rng() if rng is None else rng
    return init_parameter(shape, lambda: rng.normal(0.0, std, shape), name=name)


def uniform_parameter(shape, bound, rng=None, name=None):
    """:func:`init_parameter` drawn Uniform(-bound, bound) from ``rng`` (default: a fresh :func:`init_rng`, made
    now); torch's default Linear init has bound 1/sqrt(fan_in)."""
    rng = init_rng() if rng is None else rng
    return init_parameter(shape, lambda: rng.uniform(-bound, bound, shape), name=name)


def constant_parameter(shape, value, name=None, requires_grad=True):
    """:func:`init_parameter` filled with ``value`` (LayerNorm's ones, biases' zeros, scalar scales)."""
    return init_parameter(shape, lambda: np.full(shape, value, np.float32), name=name, requires_grad=requires_grad)

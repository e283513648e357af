"""MindSpore ``ops.Custom(func_type="aot")`` primitives for the C++ kernels, with built-in bprops.

Each factory returns a new primitive, or ``None`` when the kernels are unavailable (see
:func:`.build.kernel_library`) or MindSpore's ``device_target`` is not ``"CPU"`` when the factory is
called (the kernels are CPU code; a layer built for another device uses the built-in ops); callers
then use MindSpore's built-in ops. The backward passes are C++ kernels of the same library (one pass over
the tensors, no temporaries; see docs/performance.md "Custom kernels"):

* GELU: dL/dx = dout * (Phi(x) + x * phi(x)) (``MindramGeluGrad``).
* LayerNorm: dx, dweight, dbias (``MindramLayerNormGrad``, row statistics recomputed in float64).
* Bias add (``MindramBiasAdd``): dx = dout, dbias = the column sums of dout (``MindramBiasGrad``, float64
  accumulation); MindSpore's own ``BiasAddGrad`` took ~1.1 s of a 19 s ViT-B/32 batch-32 training step.

With ``MINDRAM_BUILTIN_KERNEL_GRADS=1`` the backward passes use built-in ops instead (the erf formula for GELU;
the built-in ``ops.LayerNorm``'s own gradient at the same point for LayerNorm), as before the gradient kernels
existed; the test suite compares the two.
"""
import logging
import math
import os

import mindspore as ms
from mindspore import ops
from mindspore.ops import functional as F

from .build import kernel_library, log_once, warn_once
from .exportable import exporting

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def static_shape(x):
    """True when ``x``'s shape is known when the graph is compiled (usable inside ``construct``)."""
    return not F.is_sequence_value_unknown(ops.shape(x))


def kernel_input(x):
    """True when the kernels take ``x``: float32 with a static shape (custom aot ops fail on dynamic shapes).
    Used inside ``construct`` (graph mode and PyNative) by every layer with a kernel path; False inside an
    :func:`~.exportable.exportable` block, so that no kernel reaches an exported graph."""
    return x.dtype == ms.float32 and static_shape(x) and not exporting()


def _same_shape(*shapes):
    """Output shape = first input's shape."""
    return shapes[0]


def _same_dtype(*dtypes):
    """Output dtype = first input's dtype."""
    return dtypes[0]


def _library():
    """Path of the kernel library when MindSpore's device_target is CPU, else None (logged once)."""
    target = ms.get_context("device_target")
    if target != "CPU":
        log_once("device_target", logging.INFO, f"device_target is {target!r}: mindram's C++ kernels are CPU-only; "
                 "using MindSpore's built-in GELU/LayerNorm")
        return None
    return kernel_library()


BUILTIN_GRADS_ENV = "MINDRAM_BUILTIN_KERNEL_GRADS"


def builtin_grads():
    """True when ``MINDRAM_BUILTIN_KERNEL_GRADS`` asks for the built-in-op backward passes (read when a layer is
    built)."""
    return os.environ.get(BUILTIN_GRADS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _layer_norm_grad_outputs(x, weight, dout, eps):  # pylint: disable=unused-argument
    """Shapes (or dtypes) of LayerNorm's (dx, dweight, dbias) from those of its gradient kernel's inputs."""
    return x, weight, weight


def _custom(lib, name, bprop=None, out_shape=_same_shape, out_dtype=_same_dtype):
    """ops.Custom for entry point ``name`` of ``lib``; None (one warning) if MindSpore refuses it."""
    try:
        return ops.Custom(f"{lib}:{name}", out_shape=out_shape, out_dtype=out_dtype,
                          func_type="aot", bprop=bprop)
    except (TypeError, ValueError, RuntimeError) as e:  # e.g. outside MS_CUSTOM_AOT_WHITE_LIST
        warn_once(f"MindSpore rejected the mindram kernel {name} ({e}); using built-in ops")
        return None


def _gelu_bprop(x, out, dout):  # pylint: disable=unused-argument
    """dL/dx of exact GELU: dout * (Phi(x) + x * phi(x)), from built-in ops."""
    cdf = 0.5 * (1.0 + ops.erf(x * _INV_SQRT2))
    pdf = ops.exp(-0.5 * x * x) * _INV_SQRT_2PI
    return (dout * (cdf + x * pdf),)


def gelu_primitive():
    """Custom op ``y = gelu(x)`` (exact erf, float32 only), or None if kernels are unavailable or not on CPU."""
    lib = _library()
    if lib is None:
        return None
    if builtin_grads():
        return _custom(lib, "MindramGelu", _gelu_bprop)
    gelu_grad = _custom(lib, "MindramGeluGrad")
    if gelu_grad is None:
        return None

    def gelu_kernel_bprop(x, out, dout):  # pylint: disable=unused-argument
        return (gelu_grad(x, dout),)

    return _custom(lib, "MindramGelu", gelu_kernel_bprop)


def layer_norm_primitive(eps):
    """Custom op ``y = layer_norm(x, weight, bias, eps_tensor)`` over the last axis (float32 only).

    ``eps`` fixes the epsilon the backward uses; the forward reads it from its fourth input, a
    float32 tensor of shape (1,). Returns None if the kernels are unavailable or not on CPU.
    """
    lib = _library()
    if lib is None:
        return None
    if not builtin_grads():
        layer_norm_grad = _custom(lib, "MindramLayerNormGrad", out_shape=_layer_norm_grad_outputs,
                                  out_dtype=_layer_norm_grad_outputs)
        if layer_norm_grad is None:
            return None

        def layer_norm_kernel_bprop(x, weight, bias, eps_t, out, dout):  # pylint: disable=unused-argument
            dx, dweight, dbias = layer_norm_grad(x, weight, dout, eps_t)
            return dx, dweight, dbias, ops.zeros_like(eps_t)

        return _custom(lib, "MindramLayerNorm", layer_norm_kernel_bprop)
    forward = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=float(eps))

    def builtin(x, weight, bias):
        return forward(x, weight, bias)[0]

    grad_all = ops.GradOperation(get_all=True, sens_param=True)(builtin)

    def layer_norm_bprop(x, weight, bias, eps_t, out, dout):  # pylint: disable=unused-argument
        """(dx, dweight, dbias, 0): the built-in op's own gradient at the same point."""
        dx, dweight, dbias = grad_all(x, weight, bias, dout)
        return dx, dweight, dbias, ops.zeros_like(eps_t)

    return _custom(lib, "MindramLayerNorm", layer_norm_bprop)


def _bias_grad_shape(dout_shape):
    return [dout_shape[-1]]


def bias_add_primitive():
    """Custom op ``y = x + bias`` over the last axis of a float32 ``x``, whose gradient is a C++ kernel too; None
    if kernels are unavailable, not on CPU, or ``MINDRAM_BUILTIN_KERNEL_GRADS`` asks for built-in backward passes
    (the forward alone is no faster than ``ops.BiasAdd``)."""
    lib = _library()
    if lib is None or builtin_grads():
        return None
    bias_grad = _custom(lib, "MindramBiasGrad", out_shape=_bias_grad_shape)
    if bias_grad is None:
        return None

    def bias_add_bprop(x, bias, out, dout):  # pylint: disable=unused-argument
        return dout, bias_grad(dout)

    return _custom(lib, "MindramBiasAdd", bias_add_bprop)


def _merged_heads_shape(qkv_shape, *others):  # pylint: disable=unused-argument
    return list(qkv_shape[:-1]) + [qkv_shape[-1] // 3]


def _packed_shape(qkv_shape, *others):  # pylint: disable=unused-argument
    return list(qkv_shape)


def attention_primitive(causal=False, bias=False, mask=False):
    """Custom op ``out = attention(qkv, scale[, bias[, mask]])``: ``qkv`` (B, N, 3C) float32 (q, k, v
    side by side), ``scale`` a (H,) float32 tensor (its shape gives the head count H, its value the scale of q);
    with ``bias=True`` a (H, N, N) tensor added to every item's scores (Swin's relative-position bias), with
    ``mask=True`` also a (G, N, N) one added to item b's as ``mask[b % G]`` (Swin's shift mask); ``causal=True``
    (no bias, no mask) keeps keys j <= i. ``out`` (B, N, C) = softmax(scale q k^T + ...) v per head, heads merged.
    One pass per (item, head), without the (B, H, N, N) scores or the split and head-transposed copies
    (docs/performance.md "Memory"). Without bias and mask it has a gradient kernel (``...AttentionGrad``: the
    probabilities recomputed per block from q and k, so a training graph keeps only q/k/v and the output);
    with them, the built-in ops' gradient at the same point (Swin trains on the op-by-op path; this serves a
    model differentiated outside training). None if kernels are unavailable, not on CPU, or (for the
    kernels with a gradient) ``MINDRAM_BUILTIN_KERNEL_GRADS`` asks for built-in backward passes."""
    lib = _library()
    if lib is None:
        return None
    if bias or mask:
        name = "MindramMaskedAttention" if mask else "MindramBiasedAttention"
        return _custom(lib, name, _biased_attention_bprop(mask), out_shape=_merged_heads_shape)
    if builtin_grads():
        return None
    name = "MindramCausalAttention" if causal else "MindramAttention"
    grad = _custom(lib, name + "Grad", out_shape=_packed_shape)
    if grad is None:
        return None

    def attention_bprop(qkv, scale, out, dout):
        return grad(qkv, scale, out, dout), ops.zeros_like(scale)

    return _custom(lib, name, attention_bprop, out_shape=_merged_heads_shape)


def _biased_attention_grad(qkv, scale, bias, mask, dout):
    """(dqkv, dbias) of the biased / masked attention kernels in built-in ops: the probabilities recomputed, then
    dv = P^T dout, dS = P (dP - rowsum(dP P)) with dP = dout v^T, dq = scale dS k, dk = scale dS^T q, and dbias
    the sum of dS over the items."""
    batch, length, packed = qkv.shape
    heads = scale.shape[0]
    width = packed // 3
    factor = scale[0]
    qkv = ops.transpose(qkv.reshape(batch, length, 3 * heads, width // heads), (0, 2, 1, 3))
    q, k, v = ops.split(qkv, heads, axis=1)
    scores = ops.BatchMatMul(transpose_b=True)(q * factor, k) + bias
    if mask is not None:
        groups = mask.shape[0]
        scores = (scores.reshape(batch // groups, groups, heads, length, length)
                  + mask.reshape(1, groups, 1, length, length)).reshape(batch, heads, length, length)
    probs = ops.softmax(scores, axis=-1)
    grad_out = ops.transpose(dout.reshape(batch, length, heads, width // heads), (0, 2, 1, 3))
    dv = ops.BatchMatMul(transpose_a=True)(probs, grad_out)
    dprobs = ops.BatchMatMul(transpose_b=True)(grad_out, v)
    dscores = probs * (dprobs - (dprobs * probs).sum(axis=-1, keepdims=True))
    dq = ops.BatchMatMul()(dscores, k) * factor
    dk = ops.BatchMatMul(transpose_a=True)(dscores, q) * factor
    dqkv = ops.transpose(ops.concat((dq, dk, dv), axis=1), (0, 2, 1, 3)).reshape(batch, length, packed)
    return dqkv, dscores.sum(axis=0)


def _biased_attention_bprop(mask):
    """The biased / masked kernels' bprop in built-in ops (for a cell differentiated outside training; training
    graphs take the op-by-op path and never reach it). The scale and the mask get zero gradients: constants."""
    if mask:
        def masked_attention_bprop(qkv, scale, bias, mask_t, out, dout):  # pylint: disable=unused-argument
            dqkv, dbias = _biased_attention_grad(qkv, scale, bias, mask_t, dout)
            return dqkv, ops.zeros_like(scale), dbias, ops.zeros_like(mask_t)

        return masked_attention_bprop

    def biased_attention_bprop(qkv, scale, bias, out, dout):  # pylint: disable=unused-argument
        dqkv, dbias = _biased_attention_grad(qkv, scale, bias, None, dout)
        return dqkv, ops.zeros_like(scale), dbias

    return biased_attention_bprop


def attention_scale(num_heads, scale):
    """The (H,) float32 ``scale`` input of :func:`attention_primitive`."""
    return ms.Tensor([float(scale)] * int(num_heads), ms.float32)


def _scalar_shape(*shapes):  # pylint: disable=unused-argument
    return [1]


def square_sum_primitive():
    """Custom op ``(1,) float32 = sum(x * x)`` of a float32 tensor (double accumulation, one threaded pass), or None
    if kernels are unavailable or not on CPU. No gradient: it measures gradients (clipping)."""
    lib = _library()
    return None if lib is None else _custom(lib, "MindramSquareSum", out_shape=_scalar_shape)


def eps_tensor(eps):
    """The (1,) float32 tensor carrying ``eps`` into the LayerNorm kernel."""
    return ms.Tensor([float(eps)], ms.float32)


def transpose_primitive(perm):
    """``(op, perm_tensor)`` with ``op(x, perm_tensor)`` = ``x.transpose(perm)`` for float32 ``x`` (gradient: the
    inverse permutation, by the same kernel), or None if kernels are unavailable or not on CPU.

    MindSpore 2.10's CPU ``Transpose`` keeps the memory of its tensors for the life of a compiled graph (every
    attention map of a ViT or Swin stays allocated; docs/performance.md "Memory"); the kernel's tensors are
    reused like any other op's."""
    lib = _library()
    if lib is None:
        return None
    perm = tuple(int(p) for p in perm)
    inverse = tuple(sorted(range(len(perm)), key=perm.__getitem__))

    def shape_of(order):
        def out_shape(x_shape, perm_shape):  # pylint: disable=unused-argument
            return [x_shape[i] for i in order]
        return out_shape

    def first_dtype(x_dtype, perm_dtype):  # pylint: disable=unused-argument
        return x_dtype

    backward = _custom(lib, "MindramTranspose", out_shape=shape_of(inverse), out_dtype=first_dtype)
    if backward is None:
        return None
    # PyNative caches an op's inferred shape by its name, attributes and input shapes: without the permutation
    # among the attributes, two permutations of one input shape would share an output shape
    backward.add_prim_attr("mindram_perm", list(inverse))
    inverse_t = ms.Tensor(inverse, ms.int64)

    def transpose_bprop(x, perm_t, out, dout):  # pylint: disable=unused-argument
        return backward(dout, inverse_t), ops.zeros_like(perm_t)

    forward = _custom(lib, "MindramTranspose", transpose_bprop, out_shape=shape_of(perm), out_dtype=first_dtype)
    if forward is None:
        return None
    forward.add_prim_attr("mindram_perm", list(perm))
    return forward, ms.Tensor(perm, ms.int64)

"""Graph-compiled training steps: loss + gradients, optional accumulation, clipping, optimizer, clamp.

``TrainStep`` does one optimizer step per call. With gradient accumulation, ``AccumulateStep`` adds
the gradients of one micro-batch into buffers and ``ApplyStep`` averages them, clips, updates and
clears. All cells use ``auto_prefix=False`` so parameter names stay those of the model (checkpoints
of a training run load into a bare model).

Loss scale: static (``loss_scale``: the loss is multiplied by it, the gradients divided) or dynamic
(``dynamic_loss_scale``: MindSpore's ``DynamicLossScaleUpdateCell``; the scale starts at ``loss_scale``, an update
whose gradients overflow is skipped and divides the scale by ``scale_factor``, ``scale_window`` overflow-free
updates multiply it; the scale and its counters are parameters, so checkpoints resume them).

In a data-parallel job (``mindram.parallel``) the gradients are averaged over the ranks (MindSpore's
``DistributedGradReducer``) before they are unscaled, clipped and applied — once per update, after accumulation —
and the returned loss is the mean of the ranks' losses.

Loss parts: a network with ``part_names`` (e.g. :class:`~mindram.losses.TaggingWithLoss`) returns ``(total, parts)``
with ``parts`` a 1-D tensor of its named terms. Only ``total`` is differentiated (the parts get zero
sensitivities) and the steps return ``[total, *parts]`` (float32, averaged over the ranks like the loss); a network
with one loss (CLIP) returns it alone and the steps return that scalar.
"""
import mindspore as ms
from mindspore import nn, ops

from ..layers.kernels import square_sum_primitive
from ..parallel import grad_reducer, loss_mean


def _divide(scale, grad):
    return grad / scale


def _zero(buffer):
    return ops.assign(buffer, ops.zeros_like(buffer))


def _finite(grad):
    return ops.isfinite(grad).all().astype(ms.float32)


def _square_sum(grad):
    return ops.reduce_sum(ops.square(grad.astype(ms.float32)))


def _square_sum_by(kernel, grad):
    """sum(grad²) by the C++ kernel for float32 gradients (one pass, no temporary), else by built-in ops."""
    if grad.dtype == ms.float32:
        return kernel(grad).reshape(())
    return _square_sum(grad)


def clip_by_global_norm(grads, max_norm, square_sum_kernel=None):
    """torch's ``clip_grad_norm_``: every gradient times ``min(1, max_norm / (‖grads‖₂ + 1e-6))``.

    MindSpore's ``ops.clip_by_global_norm`` keeps every gradient's square alive until the norm is summed and
    used 2.3 GiB more peak memory in a ViT-B/32 batch-32 training step; here each square is reduced to a scalar
    at once, by the ``MindramSquareSum`` kernel when one is given (``square_sum_primitive()``: 0.1 s instead of
    0.7 s for the 151 M gradients of ViT-B/32; docs/performance.md, "Memory").
    """
    if square_sum_kernel is None:
        squares = ops.HyperMap()(_square_sum, grads)
    else:
        squares = ops.HyperMap()(ops.partial(_square_sum_by, square_sum_kernel), grads)
    total = ops.sqrt(ops.addn(squares))
    coef = ops.minimum(max_norm / (total + 1e-6), 1.0)
    return ops.HyperMap()(ops.partial(_scale, coef), grads)


def _scale(coef, grad):
    return grad * coef.astype(grad.dtype)


def _logit_scale(weights):
    found = [p for p in weights if p.name.endswith("logit_scale")]
    return found[0] if found else None


class _StepBase(nn.Cell):
    def __init__(self, network, optimizer, max_grad_norm=None, clamp_max=None, loss_scale=1.0, dynamic=None):
        """``dynamic``: None (static ``loss_scale``) or ``{"scale_factor": f, "scale_window": n}``."""
        super().__init__(auto_prefix=False)
        self.network = network
        self.has_parts = bool(getattr(network, "part_names", ()))
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.grad = ops.GradOperation(get_by_list=True, sens_param=True)
        self.max_grad_norm = max_grad_norm
        self.clip = max_grad_norm is not None
        self.square_sum = square_sum_primitive() if self.clip else None
        self.loss_scale = float(loss_scale)
        self.dynamic = dynamic is not None
        if self.dynamic:
            self.scale_sense = ms.Parameter(ms.Tensor(self.loss_scale, ms.float32), name="loss_scale_value",
                                            requires_grad=False)
            self.scale_update = nn.DynamicLossScaleUpdateCell(self.loss_scale, float(dynamic["scale_factor"]),
                                                              int(dynamic["scale_window"]))
        logit_scale = _logit_scale(self.weights) if clamp_max is not None else None
        self.clamp = logit_scale is not None
        if self.clamp:   # (an attribute set to None would be taken for a missing parameter)
            self.logit_scale = logit_scale
        self.clamp_max = float(clamp_max) if clamp_max is not None else 0.0
        self.hyper_map = ops.HyperMap()
        self.reducer = grad_reducer(self.weights)
        self.reduce = self.reducer is not None
        self.loss_mean = loss_mean()
        self.mean_loss = self.loss_mean is not None

    def _loss_and_grads(self, *inputs):
        """``(reported, grads)``: ``reported`` the loss, or ``[total, *parts]`` for a network with parts."""
        out = self.network(*inputs)
        loss = out[0] if self.has_parts else out
        if self.dynamic:
            sens = ops.ones_like(loss) * self.scale_sense.astype(loss.dtype)
        else:
            sens = ops.fill(loss.dtype, loss.shape, self.loss_scale)
        if self.has_parts:
            sens = (sens, ops.zeros_like(out[1]))
            loss = ops.concat((loss.astype(ms.float32).reshape((1,)), out[1].astype(ms.float32)))
        grads = self.grad(self.network, self.weights)(*inputs, sens)
        if self.mean_loss:
            loss = self.loss_mean(loss)
        return loss, grads

    def _apply(self, grads, scale):
        """Average over the ranks, divide by ``scale`` (loss scale × accumulation), clip, update, clamp
        logit_scale."""
        if self.reduce:
            grads = self.reducer(grads)
        grads = self.hyper_map(ops.partial(_divide, scale), grads) if scale != 1.0 else grads
        return self._update(grads)

    def _apply_dynamic(self, grads, steps, out):
        """The dynamic-scale ``_apply``: average over the ranks, unscale, update unless the gradients overflowed
        (then the scale shrinks; the update cell grows it after ``scale_window`` good steps); returns ``out``
        after the update."""
        if self.reduce:
            grads = self.reducer(grads)
        grads = self.hyper_map(ops.partial(_divide, self.scale_sense * steps), grads)
        overflow = ops.stack(self.hyper_map(_finite, grads)).min() < 0.5
        overflow = self.scale_update(self.scale_sense, overflow)
        if not overflow:
            out = ops.depend(out, self._update(grads))
        return out

    def _update(self, grads):
        """Clip, update, clamp logit_scale."""
        if self.clip:
            grads = clip_by_global_norm(grads, self.max_grad_norm, self.square_sum)
        done = self.optimizer(grads)
        if self.clamp:
            clamped = ops.clamp(ops.depend(self.logit_scale, done), 0.0, self.clamp_max)
            done = ops.depend(done, ops.assign(self.logit_scale, clamped))
        return done


class TrainStep(_StepBase):
    """One optimizer step on one batch; returns the loss (``[total, *parts]`` for a network with parts)."""

    def construct(self, *inputs):
        loss, grads = self._loss_and_grads(*inputs)
        if self.dynamic:
            return self._apply_dynamic(grads, 1.0, loss)
        return ops.depend(loss, self._apply(grads, self.loss_scale))


class AccumulateStep(_StepBase):
    """Add one micro-batch's gradients into ``accum_grad.*`` buffers; returns the loss (as :class:`TrainStep`)."""

    def __init__(self, network, optimizer, **kwargs):
        super().__init__(network, optimizer, **kwargs)
        self.accum = self.weights.clone(prefix="accum_grad", init="zeros")

    def construct(self, *inputs):
        loss, grads = self._loss_and_grads(*inputs)
        added = self.hyper_map(ops.assign_add, self.accum, grads)
        return ops.depend(loss, added)


class ApplyStep(nn.Cell):
    """Average the accumulated gradients over ``steps`` micro-batches, update, clear the buffers."""

    def __init__(self, accumulate, steps):
        super().__init__(auto_prefix=False)
        self.accumulate = accumulate
        self.steps = float(steps)
        self.scale = accumulate.loss_scale * steps
        self.scale_tensor = ms.Tensor(self.scale, ms.float32)
        self.hyper_map = ops.HyperMap()

    def construct(self):
        grads = self.hyper_map(ops.partial(ops.mul, 1.0), self.accumulate.accum)
        if self.accumulate.dynamic:
            done = self.accumulate._apply_dynamic(grads, self.steps, self.scale_tensor)
        else:
            done = self.accumulate._apply(grads, self.scale)
        cleared = self.hyper_map(_zero, ops.depend(self.accumulate.accum, done))
        return ops.depend(self.scale_tensor, cleared)

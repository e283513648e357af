"""Graph-compiled training steps: loss + gradients, optional accumulation, clipping, optimizer, clamp.

``TrainStep`` does one optimizer step per call. With gradient accumulation, ``AccumulateStep`` adds
the gradients of one micro-batch into buffers and ``ApplyStep`` averages them, clips, updates and
clears. All cells use ``auto_prefix=False`` so parameter names stay those of the model (checkpoints
of a training run load into a bare model).
"""
import mindspore as ms
from mindspore import nn, ops


def _divide(scale, grad):
    return grad / scale


def _zero(buffer):
    return ops.assign(buffer, ops.zeros_like(buffer))


def _logit_scale(weights):
    found = [p for p in weights if p.name.endswith("logit_scale")]
    return found[0] if found else None


class _StepBase(nn.Cell):
    def __init__(self, network, optimizer, max_grad_norm=None, clamp_max=None, loss_scale=1.0):
        super().__init__(auto_prefix=False)
        self.network = network
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.grad = ops.GradOperation(get_by_list=True, sens_param=True)
        self.max_grad_norm = max_grad_norm
        self.clip = max_grad_norm is not None
        self.loss_scale = float(loss_scale)
        self.logit_scale = _logit_scale(self.weights) if clamp_max is not None else None
        self.clamp = self.logit_scale is not None
        self.clamp_max = float(clamp_max) if clamp_max is not None else 0.0
        self.hyper_map = ops.HyperMap()

    def _loss_and_grads(self, *inputs):
        loss = self.network(*inputs)
        sens = ops.fill(loss.dtype, loss.shape, self.loss_scale)
        grads = self.grad(self.network, self.weights)(*inputs, sens)
        return loss, grads

    def _apply(self, grads, scale):
        """Divide by ``scale`` (loss scale × accumulation), clip, update, clamp logit_scale."""
        grads = self.hyper_map(ops.partial(_divide, scale), grads) if scale != 1.0 else grads
        if self.clip:
            grads = ops.clip_by_global_norm(grads, self.max_grad_norm)
        done = self.optimizer(grads)
        if self.clamp:
            clamped = ops.clamp(ops.depend(self.logit_scale, done), 0.0, self.clamp_max)
            done = ops.depend(done, ops.assign(self.logit_scale, clamped))
        return done


class TrainStep(_StepBase):
    """One optimizer step on one batch; returns the loss."""

    def construct(self, *inputs):
        loss, grads = self._loss_and_grads(*inputs)
        return ops.depend(loss, self._apply(grads, self.loss_scale))


class AccumulateStep(_StepBase):
    """Add one micro-batch's gradients into ``accum_grad.*`` buffers; returns the loss."""

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
        self.scale = accumulate.loss_scale * steps
        self.scale_tensor = ms.Tensor(self.scale, ms.float32)
        self.hyper_map = ops.HyperMap()

    def construct(self):
        grads = self.hyper_map(ops.partial(ops.mul, 1.0), self.accumulate.accum)
        done = self.accumulate._apply(grads, self.scale)
        cleared = self.hyper_map(_zero, ops.depend(self.accumulate.accum, done))
        return ops.depend(self.scale_tensor, cleared)

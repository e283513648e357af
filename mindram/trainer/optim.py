"""Optimizer and learning-rate schedule builders (AdamW without decay on norms/biases/embeddings/logit_scale;
cosine decay with linear warmup)."""
import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..errors import ConfigError
from ..registry import MindFormerModuleType, MindFormerRegister

NO_DECAY_MARKERS = ("ln_", "norm", "bias", "embedding", "logit_scale")


def exclude_from_weight_decay(name, shape):
    """open_clip's rule (1-D tensors, norms, biases, logit_scale) plus embeddings and class tokens."""
    return len(shape) < 2 or any(m in name for m in NO_DECAY_MARKERS)


@MindFormerRegister.register(MindFormerModuleType.LR)
class CosineWithWarmUpLR(nn.learning_rate_schedule.LearningRateSchedule):
    """lr(step) = lr·step/warmup during warmup, then min_lr + (lr-min_lr)·½(1+cos(π·progress))."""

    def __init__(self, learning_rate, total_steps, warmup_steps=0, warmup_ratio=None, min_lr=0.0):
        super().__init__()
        if warmup_ratio is not None:
            warmup_steps = int(round(warmup_ratio * total_steps))
        if total_steps < 1 or warmup_steps < 0 or learning_rate <= 0:
            raise ConfigError(f"CosineWithWarmUpLR: need total_steps >= 1, warmup_steps >= 0, learning_rate > 0; "
                              f"got {total_steps}, {warmup_steps}, {learning_rate}")
        self.learning_rate, self.min_lr = float(learning_rate), float(min_lr)
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)

    def value(self, step):
        """The rate at an integer step, in Python (for logging and tests)."""
        if step < self.warmup_steps:
            return self.learning_rate * (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr + (self.learning_rate - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def construct(self, global_step):
        step = global_step.astype(ms.float32)
        warm = self.learning_rate * (step + 1.0) / max(self.warmup_steps, 1)
        progress = ops.minimum((step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps), 1.0)
        cosine = self.min_lr + (self.learning_rate - self.min_lr) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.select(step < self.warmup_steps, warm, cosine)


@MindFormerRegister.register(MindFormerModuleType.LR)
class ConstantWithWarmUpLR(CosineWithWarmUpLR):
    """Linear warmup, then constant."""

    def value(self, step):
        return self.learning_rate * min(1.0, (step + 1) / max(self.warmup_steps, 1))

    def construct(self, global_step):
        step = global_step.astype(ms.float32)
        return self.learning_rate * ops.minimum((step + 1.0) / max(self.warmup_steps, 1), 1.0)


def build_lr_schedule(cfg, total_steps):
    """Build the ``lr_schedule`` section (``type`` + arguments) for ``total_steps`` optimizer steps."""
    cfg = dict(cfg or {"type": "CosineWithWarmUpLR", "learning_rate": 5e-4})
    cls = MindFormerRegister.get_cls(MindFormerModuleType.LR, cfg.pop("type", "CosineWithWarmUpLR"))
    cfg.setdefault("total_steps", total_steps)
    try:
        return cls(**cfg)
    except TypeError as e:
        raise ConfigError(f"lr_schedule: {e}") from e


@MindFormerRegister.register(MindFormerModuleType.OPTIMIZER, alias="AdamW")
class AdamWeightDecay(nn.AdamWeightDecay):
    """AdamW (decoupled weight decay) over two groups: decayed weights and the excluded ones."""

    def __init__(self, params, learning_rate, beta1=0.9, beta2=0.98, eps=1e-6, weight_decay=0.2):
        params = list(params)
        decay = [p for p in params if not exclude_from_weight_decay(p.name, p.shape)]
        no_decay = [p for p in params if exclude_from_weight_decay(p.name, p.shape)]
        groups = [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]
        super().__init__([g for g in groups if g["params"]], learning_rate=learning_rate, beta1=beta1,
                         beta2=beta2, eps=eps)


def build_optimizer(cfg, params, lr_schedule):
    """Build the ``optimizer`` section for ``params`` with the given learning-rate schedule."""
    cfg = dict(cfg or {"type": "AdamWeightDecay"})
    cls = MindFormerRegister.get_cls(MindFormerModuleType.OPTIMIZER, cfg.pop("type", "AdamWeightDecay"))
    try:
        return cls(params, learning_rate=lr_schedule, **cfg)
    except TypeError as e:
        raise ConfigError(f"optimizer: {e}") from e


def current_lr(optimizer):
    """Learning rate the optimizer's schedule gives at its current global step (Python float)."""
    step = int(optimizer.global_step.asnumpy().reshape(-1)[0])
    lr = optimizer.learning_rate
    if hasattr(lr, "value"):
        return float(lr.value(step))
    if isinstance(lr, (Tensor, ms.Parameter)):
        return float(np.asarray(lr.asnumpy()).reshape(-1)[0])
    return float(lr)

"""Optimizer and learning-rate schedule builders (AdamW without decay on norms/biases/embeddings/logit_scale;
cosine decay with linear warmup; layer-wise learning-rate decay).

Layer-wise lr decay (``layer_decay = d``, timm's ``param_groups_layer_decay``): the model numbers its
parameters' layers ``0 … L−1`` (a ``layer_id(param_name)`` function, e.g. ``RAMBase.layer_id`` for the Swin
rule); a parameter of layer ℓ learns at lr·d^(L−1−ℓ), so the top layer keeps the full rate. Weight decay
follows :func:`exclude_from_weight_decay` as in :class:`AdamWeightDecay`.
"""
import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..errors import ConfigError
from ..registry import MindFormerModuleType, MindFormerRegister
from ..utils.validation import check_int, check_number

NO_DECAY_MARKERS = ("ln_", "norm", "bias", "embedding", "logit_scale")
DEFAULT_OPTIMIZER = "AdamWeightDecay"          # optimizer.type when the section names none
DEFAULT_LR_SCHEDULE = "CosineWithWarmUpLR"     # lr_schedule.type when the section names none


def exclude_from_weight_decay(name, shape):
    """open_clip's rule (1-D tensors, norms, biases, logit_scale) plus embeddings and class tokens."""
    return len(shape) < 2 or any(m in name for m in NO_DECAY_MARKERS)


@MindFormerRegister.register(MindFormerModuleType.LR)
class CosineWithWarmUpLR(nn.learning_rate_schedule.LearningRateSchedule):
    """lr(step) = lr·step/warmup during warmup, then min_lr + (lr-min_lr)·½(1+cos(π·progress))."""

    def __init__(self, learning_rate, total_steps, warmup_steps=0, warmup_ratio=None, min_lr=0.0):
        super().__init__()
        self.check_args(dict(learning_rate=learning_rate, total_steps=total_steps, warmup_steps=warmup_steps,
                             warmup_ratio=warmup_ratio, min_lr=min_lr), key=type(self).__name__)
        if warmup_ratio is not None:
            warmup_steps = int(round(warmup_ratio * total_steps))
        self.learning_rate, self.min_lr = float(learning_rate), float(min_lr)
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)

    @staticmethod
    def check_args(args, key="lr_schedule"):
        """ConfigError naming ``key.<argument>`` for a value of ``args`` (the section's arguments, ``total_steps``
        optional: the trainer sets it) out of range: ``learning_rate`` finite > 0 (required), ``min_lr`` finite
        >= 0, ``total_steps`` int >= 1, ``warmup_steps`` int >= 0, ``warmup_ratio`` null or in [0, 1]."""
        if "learning_rate" not in args:
            raise ConfigError(f"{key}.learning_rate: required (the peak learning rate, e.g. 1.0e-3)")
        check_number(args["learning_rate"], f"{key}.learning_rate", low=0, low_open=True)
        check_number(args.get("min_lr", 0.0), f"{key}.min_lr", low=0)
        if "total_steps" in args:
            check_int(args["total_steps"], f"{key}.total_steps", minimum=1)
        check_int(args.get("warmup_steps", 0), f"{key}.warmup_steps", minimum=0)
        if args.get("warmup_ratio") is not None:
            check_number(args["warmup_ratio"], f"{key}.warmup_ratio", low=0, high=1)

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
    cfg = dict(cfg or {"type": DEFAULT_LR_SCHEDULE, "learning_rate": 5e-4})
    cls = MindFormerRegister.get_cls(MindFormerModuleType.LR, cfg.pop("type", None) or DEFAULT_LR_SCHEDULE)
    cfg.setdefault("total_steps", total_steps)
    check_section_args("lr_schedule", cls, cfg)
    try:
        return cls(**cfg)
    except TypeError as e:
        raise ConfigError(f"lr_schedule: {e}") from e


def check_section_args(section, cls, args):
    """ConfigError naming ``section.<argument>`` for a value the registered ``cls`` of an ``optimizer`` or
    ``lr_schedule`` section does not take (its ``check_args``; a class without one is not checked)."""
    check = getattr(cls, "check_args", None)
    if callable(check):
        check(args, key=section)


@MindFormerRegister.register(MindFormerModuleType.OPTIMIZER, alias="AdamW")
class AdamWeightDecay(nn.AdamWeightDecay):
    """AdamW (decoupled weight decay) over two groups: decayed weights and the excluded ones."""

    def __init__(self, params, learning_rate, beta1=0.9, beta2=0.98, eps=1e-6, weight_decay=0.2):
        self.check_args(dict(beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay), key=type(self).__name__)
        beta1, beta2, eps = float(beta1), float(beta2), float(eps)
        params = list(params)
        decay = [p for p in params if not exclude_from_weight_decay(p.name, p.shape)]
        no_decay = [p for p in params if exclude_from_weight_decay(p.name, p.shape)]
        groups = [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]
        super().__init__([g for g in groups if g["params"]], learning_rate=learning_rate, beta1=beta1,
                         beta2=beta2, eps=eps)

    @staticmethod
    def check_args(args, key="optimizer"):
        """ConfigError naming ``key.<argument>`` for a value of ``args`` (the section's arguments) out of range:
        ``beta1``/``beta2`` in (0, 1), ``eps`` finite > 0, ``weight_decay`` finite >= 0."""
        for name in ("beta1", "beta2"):
            if name in args:
                check_number(args[name], f"{key}.{name}", low=0, high=1, low_open=True, high_open=True)
        if "eps" in args:
            check_number(args["eps"], f"{key}.eps", low=0, low_open=True)
        if "weight_decay" in args:
            check_number(args["weight_decay"], f"{key}.weight_decay", low=0)


def build_optimizer(cfg, params, lr_schedule):
    """Build the ``optimizer`` section for ``params`` with the given learning-rate schedule."""
    cfg = dict(cfg or {"type": DEFAULT_OPTIMIZER})
    cls = MindFormerRegister.get_cls(MindFormerModuleType.OPTIMIZER, cfg.pop("type", None) or DEFAULT_OPTIMIZER)
    check_section_args("optimizer", cls, cfg)
    try:
        return cls(params, learning_rate=lr_schedule, **cfg)
    except TypeError as e:
        raise ConfigError(f"optimizer: {e}") from e


class ScaledLR(nn.learning_rate_schedule.LearningRateSchedule):
    """``scale × base(step)``: one parameter group's share of a schedule."""

    def __init__(self, base, scale):
        super().__init__()
        self.base, self.scale = base, float(scale)

    def value(self, step):
        return self.scale * self.base.value(step)

    def construct(self, global_step):
        return self.base(global_step) * self.scale


def param_groups_layer_decay(params, layer_id, num_layers, layer_decay, weight_decay=0.2):
    """Parameter groups ``{"params", "weight_decay", "lr_scale"}``, one per (layer id, decayed or not), sorted
    by layer: ``layer_id(name)`` in ``[0, num_layers)``, ``lr_scale = layer_decay ** (num_layers − 1 − id)``."""
    groups = {}
    for param in params:
        decay = 0.0 if exclude_from_weight_decay(param.name, param.shape) else float(weight_decay)
        groups.setdefault((layer_id(param.name), decay), []).append(param)
    return [{"params": group, "weight_decay": decay, "lr_scale": layer_decay ** (num_layers - 1 - layer)}
            for (layer, decay), group in sorted(groups.items())]


def layer_decay_adamw(params, schedule, layer_id, num_layers, layer_decay, beta1=0.9, beta2=0.98, eps=1e-6,
                      weight_decay=0.2):
    """AdamW over :func:`param_groups_layer_decay`'s groups, each at lr ``ScaledLR(schedule, lr_scale)``."""
    groups = param_groups_layer_decay(params, layer_id, num_layers, layer_decay, weight_decay)
    return nn.AdamWeightDecay([{"params": g["params"], "weight_decay": g["weight_decay"],
                                "lr": ScaledLR(schedule, g["lr_scale"])} for g in groups],
                              learning_rate=schedule, beta1=beta1, beta2=beta2, eps=eps)


def current_lr(optimizer):
    """Learning rate the optimizer's schedule gives at its current global step (Python float)."""
    step = int(optimizer.global_step.asnumpy().reshape(-1)[0])
    lr = optimizer.learning_rate
    if hasattr(lr, "value"):
        return float(lr.value(step))
    if isinstance(lr, (Tensor, ms.Parameter)):
        return float(np.asarray(lr.asnumpy()).reshape(-1)[0])
    return float(lr)

"""Trainer, tasks, optimizer/schedule builders, checkpoints."""
from ..utils.lazy import lazy_exports

_EXPORTS = {
    "AdamWeightDecay": ".optim", "ConstantWithWarmUpLR": ".optim", "CosineWithWarmUpLR": ".optim",
    "TASKS": ".tasks", "ContrastiveLanguageImagePretrainTrainer": ".tasks",
    "ZeroShotImageClassificationTrainer": ".tasks",
    "Trainer": ".trainer",
    "TrainingArguments": ".training_args",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["AdamWeightDecay", "ConstantWithWarmUpLR", "CosineWithWarmUpLR", "TASKS",
           "ContrastiveLanguageImagePretrainTrainer", "Trainer", "TrainingArguments",
           "ZeroShotImageClassificationTrainer"]

"""Trainer, tasks, optimizer/schedule builders, checkpoints."""
from .optim import AdamWeightDecay, ConstantWithWarmUpLR, CosineWithWarmUpLR
from .tasks import TASKS, ContrastiveLanguageImagePretrainTrainer, ZeroShotImageClassificationTrainer
from .trainer import Trainer
from .training_args import TrainingArguments

__all__ = ["AdamWeightDecay", "ConstantWithWarmUpLR", "CosineWithWarmUpLR", "TASKS",
           "ContrastiveLanguageImagePretrainTrainer", "Trainer", "TrainingArguments",
           "ZeroShotImageClassificationTrainer"]

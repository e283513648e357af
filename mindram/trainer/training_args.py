"""TrainingArguments: the ``runner_config`` section of a run config (MindFormers' name), validated strictly."""
import dataclasses
import math
from typing import Optional

from ..errors import ConfigError
from ..models.configuration_utils import BaseConfig

EVALUATION_STRATEGIES = (None, "no", "steps", "epoch")
RUN_MODES = ("train", "eval", "predict", "finetune")   # what run_mindformer.py --run_mode / a config's run_mode run


@dataclasses.dataclass
class TrainingArguments(BaseConfig):
    """Everything about *how* to train/evaluate; the model, data, optimizer and schedule live in their sections."""

    output_dir: str = "./output"
    seed: int = 0
    epochs: int = 1
    max_steps: Optional[int] = None            # optimizer steps; overrides epochs when set
    batch_size: int = 32
    eval_batch_size: Optional[int] = None
    gradient_accumulation_steps: int = 1
    max_grad_norm: Optional[float] = 1.0       # global-norm clipping; None disables
    logit_scale_max: Optional[float] = math.log(100.0)   # clamp after each step (open_clip); None disables
    loss_scale: float = 1.0                    # static loss scale for float16 training (dynamic: the initial one)
    dynamic_loss_scale: bool = False           # DynamicLossScaleUpdateCell: skip overflowing updates, adapt
    scale_factor: float = 2.0                  # dynamic: divide on overflow / multiply after scale_window steps
    scale_window: int = 1000                   # dynamic: overflow-free updates before the scale grows
    logging_steps: int = 10
    # evaluation during training (Hugging Face's names): every eval_steps updates and after the last one
    eval_steps: Optional[int] = None
    evaluation_strategy: Optional[str] = None  # "no" | "steps" (needs eval_steps) | "epoch"; None: steps if eval_steps
    metric_for_best_model: Optional[str] = None    # eval metric choosing output_dir/best/ (None: the task's default)
    greater_is_better: Optional[bool] = None   # None: true unless the metric's name ends in "loss"
    save_steps: Optional[int] = None           # None: save at the end of each epoch only
    keep_checkpoint_max: int = 3
    num_workers: int = 2
    train_transform: bool = True               # open_clip's RandomResizedCrop(0.9-1.0); False: eval transform
    resume_from_checkpoint: Optional[str] = None   # a checkpoint directory, or "latest" in output_dir
    overwrite_output_dir: bool = False         # a new run deletes a previous run's outputs instead of refusing
    stop_on_nonfinite: bool = True
    # data-parallel contrastive loss (open_clip's --local-loss / --gather-with-grad; see mindram.losses.ClipLoss)
    local_loss: bool = False                   # each rank: its own rows against the global batch's columns
    gather_with_grad: bool = True              # differentiate the all-gather: N ranks x b == one device x N*b

    def validate(self):
        for key in ("epochs", "batch_size", "gradient_accumulation_steps", "logging_steps", "keep_checkpoint_max",
                    "num_workers"):
            if getattr(self, key) < 1:
                raise ConfigError(f"runner_config.{key}: expected >= 1, got {getattr(self, key)}")
        for key in ("max_steps", "save_steps", "eval_batch_size", "eval_steps"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"runner_config.{key}: expected >= 1 or null, got {getattr(self, key)}")
        if self.evaluation_strategy not in EVALUATION_STRATEGIES:
            raise ConfigError(f"runner_config.evaluation_strategy: expected one of {list(EVALUATION_STRATEGIES)}, "
                              f"got {self.evaluation_strategy!r}")
        if self.evaluation_strategy == "steps" and self.eval_steps is None:
            raise ConfigError("runner_config.evaluation_strategy: 'steps' needs runner_config.eval_steps (>= 1)")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ConfigError(f"runner_config.max_grad_norm: expected > 0 or null, got {self.max_grad_norm}")
        if self.loss_scale <= 0:
            raise ConfigError(f"runner_config.loss_scale: expected > 0, got {self.loss_scale}")
        if self.scale_factor <= 1:
            raise ConfigError(f"runner_config.scale_factor: expected > 1, got {self.scale_factor}")
        if self.scale_window < 1:
            raise ConfigError(f"runner_config.scale_window: expected >= 1, got {self.scale_window}")

    @property
    def evaluates(self):
        """When training evaluates: ``"steps"``, ``"epoch"`` or None (never)."""
        strategy = self.evaluation_strategy or ("steps" if self.eval_steps is not None else "no")
        return None if strategy == "no" else strategy

    def best_is_greater(self, metric):
        """Whether a larger ``metric`` is better (``greater_is_better``, default: unless it names a loss)."""
        return self.greater_is_better if self.greater_is_better is not None else not metric.endswith("loss")

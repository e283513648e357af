"""Trainer: one entry point for every task — ``train()``, ``evaluate()``, ``predict(input_data, top_k)``.

    Trainer(task="contrastive_language_image_pretrain", model="clip_vit_b_32", train_dataset="./Flickr8k").train()
    Trainer(args="configs/clip/run_clip_demo_synthetic.yaml").train()

``args`` is a run YAML, a mapping, a :class:`MindFormerConfig` or :class:`TrainingArguments`; ``task``
defaults to the config's ``trainer.type``; a task without a config gets its default run config.
``model`` is a name (architecture + weights from the catalog), a directory/``.ckpt``, or a model
instance; datasets are a directory (for the configured ``data_loader``) or a record source.
"""
import logging
from pathlib import Path

from .. import catalog, hub
from ..config import MindFormerConfig
from ..errors import ConfigError, UnknownNameError
from ..models.modeling_utils import PreTrainedModel
from ..registry import MindFormerModuleType, MindFormerRegister
from ..utils.validation import check_top_k
from .run_config import SHARDED_CHECKPOINT_KEYS, load_run_config
from .tasks import BaseTrainer  # importing the package registers its trainers
from .training_args import TrainingArguments

logger = logging.getLogger(__name__)

#: MindFormers arguments for distributed checkpoints, with why they do not apply (accepted when unset)
UNSUPPORTED = dict(SHARDED_CHECKPOINT_KEYS, src_strategy=SHARDED_CHECKPOINT_KEYS["src_strategy_path_or_dir"])


def task_classes():
    """``{task name: trainer class}`` of every registered trainer (``MindFormerModuleType.TRAINER``)."""
    table = MindFormerRegister.registry.get(MindFormerModuleType.TRAINER, {})
    return {cls.name: cls for cls in table.values()
            if isinstance(cls, type) and issubclass(cls, BaseTrainer) and cls.name}


def _task_class(task, config):
    tasks = task_classes()
    if task is not None:
        if task not in tasks:
            raise UnknownNameError(f"unknown task {task!r}; supported: {sorted(tasks)}")
        return tasks[task]
    trainer_type = (config.get("trainer") or {}).get("type")
    if trainer_type is None:
        raise ConfigError(f"no task: pass task= (one of {sorted(tasks)}) or set trainer.type in the run config")
    return MindFormerRegister.get_cls(MindFormerModuleType.TRAINER, trainer_type)


class Trainer:
    """Runs a task's train / evaluate / predict from a run config and optional overrides."""

    def __init__(self, args=None, task=None, model=None, train_dataset=None, eval_dataset=None, overrides=None):
        if isinstance(args, TrainingArguments):
            args = {"runner_config": args.to_dict()}
        if args is None and task is not None:
            defaults = {name: cls.default_config for name, cls in task_classes().items() if cls.default_config}
            if task not in defaults:
                raise UnknownNameError(f"unknown task {task!r}; supported: {sorted(defaults)}")
            args = catalog.CONFIG_ROOT / defaults[task]
        config = load_run_config(args, overrides)
        task_cls = _task_class(task, config)
        config.setdefault("trainer", MindFormerConfig())
        config.trainer.type = task_cls.__name__
        model_obj = self._apply_model(config, model, task_cls)
        train_source = self._apply_dataset(config, "train_dataset", train_dataset)
        eval_source = self._apply_dataset(config, "eval_dataset", eval_dataset)
        self.config = config
        self.task = task_cls(config, model=model_obj, train_source=train_source, eval_source=eval_source)

    @staticmethod
    def _apply_model(config, model, task_cls):
        if model is None or isinstance(model, PreTrainedModel):
            return model
        if not isinstance(model, (str, Path)):
            raise TypeError(f"model must be a name, a path or a model instance, got {type(model).__name__}")
        path = Path(str(model)).expanduser()
        model_cls = task_cls.model_class(str(model))  # the task's choice for that name (registry + config)
        if path.exists():
            config.load_checkpoint = str(path)
            config.model = MindFormerConfig({"arch": {"type": model_cls.__name__}})
            return None
        model_config = model_cls.config_class.from_pretrained(str(model))
        config.model = MindFormerConfig({"arch": {"type": model_cls.__name__},
                                         "model_config": {k: v for k, v in model_config.to_dict().items()}})
        config.trainer.model_name = str(model)
        record = catalog.resolve(model_cls.family, str(model))
        fetchable = bool(record.sources) and not hub.offline()   # downloaded and converted on first use
        if task_cls.requires_pretrained_weights or record.checkpoint_path.is_file() or fetchable:
            config.load_checkpoint = str(model)
        else:   # model= replaces the configured weights too: none of another model's are loaded into it
            config.load_checkpoint = None
            logger.warning("no converted checkpoint for %s (%s): training starts from random initialisation",
                           model, "offline" if record.sources else "no download source")
        return None

    @staticmethod
    def _apply_dataset(config, section, dataset):
        if dataset is None:
            return None
        if isinstance(dataset, (str, Path)):
            if config.get(section) is None or config[section].get("data_loader") is None:
                raise ConfigError(f"{section}={str(dataset)!r} is a directory but the run config has no "
                                  f"{section}.data_loader to read it with")
            config[section].data_loader.dataset_dir = str(dataset)
            return None
        if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
            return dataset
        raise TypeError(f"{section} must be a directory or a record source (len + indexing), "
                        f"got {type(dataset).__name__}")

    @property
    def model(self):
        return self.task.model

    def train(self, train_checkpoint=None, resume_training=None, **kwargs):
        """Train the model; returns a summary (steps, losses) also written to ``train_metrics.json``.

        MindFormers' arguments: ``train_checkpoint`` (a model name, directory or ``.ckpt`` to start from;
        ``True``/``False``/None: the configured ``load_checkpoint``) and ``resume_training`` (``True`` or
        ``"latest"``: resume the latest checkpoint in ``output_dir``; a checkpoint directory: resume it).
        """
        self._refuse_unsupported(kwargs, "train")
        if train_checkpoint not in (None, True, False):
            self._use_checkpoint(train_checkpoint, "train_checkpoint")
        if resume_training not in (None, False):
            self.task.args.resume_from_checkpoint = "latest" if resume_training is True else str(resume_training)
        return self.task.train()

    def evaluate(self, eval_checkpoint=None, **kwargs):
        """Evaluate on ``eval_dataset``; returns the metrics also written to ``eval_metrics.json``.

        ``eval_checkpoint`` (MindFormers): None/False — the model as configured; ``True`` — the weights this
        trainer holds (trained or loaded), else the ``final/`` model of a training run in ``output_dir``, else
        the configured checkpoint; a model name, directory or ``.ckpt`` — that checkpoint.
        """
        self._refuse_unsupported(kwargs, "evaluate")
        self._use_checkpoint(eval_checkpoint, "eval_checkpoint")
        self.task.model  # pylint: disable=pointless-statement  # built (its weights logged) before any data is read
        return self.task.evaluate()

    def predict(self, input_data=None, top_k=None, predict_checkpoint=None, **kwargs):
        """Predictions for images (paths, ``http(s)`` URLs, PIL images, arrays, or a list of them).

        ``top_k``: labels per image, a positive int (None: the config's ``predict.top_k``). In a list, an input
        that cannot be read gives ``None`` (and a warning naming it) instead of failing the others.
        ``predict_checkpoint``: as ``eval_checkpoint`` of :meth:`evaluate` (MindFormers' argument).
        Other keyword arguments are task options (e.g. the tagging task's ``output_format``/``language``).
        """
        if input_data is None:
            raise TypeError("predict() needs input_data: an image path or URL, a PIL image, an array, or a list")
        self._refuse_unsupported({k: kwargs[k] for k in UNSUPPORTED if k in kwargs}, "predict")
        options = {k: v for k, v in kwargs.items() if k not in UNSUPPORTED}
        check_top_k(top_k, "predict top_k (labels per image; None: the config's predict.top_k)")
        self._use_checkpoint(predict_checkpoint, "predict_checkpoint")
        self.task.model  # pylint: disable=pointless-statement  # built (its weights logged) before any input is read
        return self.task.predict(input_data, top_k=top_k, **options)

    def _use_checkpoint(self, checkpoint, key):
        """Point the task at ``checkpoint`` (see :meth:`evaluate`); the model is rebuilt on next use."""
        if checkpoint is None or checkpoint is False:
            return
        if checkpoint is True:
            if self.task.model_built:
                return  # the weights this trainer already holds (trained here, or loaded)
            final = self.task.output_dir / "final"
            if not (final / "config.yaml").is_file():
                return  # the configured checkpoint
            checkpoint = final
        if not isinstance(checkpoint, (str, Path)):
            raise TypeError(f"{key} must be True/False, a model name or a checkpoint path, "
                            f"got {type(checkpoint).__name__}")
        catalog.check_model_path(checkpoint)
        self.task.use_checkpoint(checkpoint)
        logger.info("%s: using %s", key, checkpoint)

    @staticmethod
    def _refuse_unsupported(kwargs, method):
        for key, value in kwargs.items():
            if key in UNSUPPORTED:
                if value in (None, False, ""):
                    continue
                raise ConfigError(f"{method}({key}={value!r}): {UNSUPPORTED[key]}")
            raise TypeError(f"{method}() got an unexpected keyword argument {key!r}")

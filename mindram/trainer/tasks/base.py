"""What every task shares: building the model and processors from a run config (through the registry and the
model class's declarations, never by family name), the training loop (accumulation, clipping, logit-scale clamp,
NaN stop, checkpoints, exact resume), logging and metrics files.

A task subclass supplies the family- or task-specific parts: ``dataset`` (the batched pipeline) and
``network_with_loss`` (model + loss cell), and may override ``default_arch`` / ``model_class`` (which model a
bare name builds), ``train_inputs`` (the step cell's inputs from one batch), ``build_optimizer``,
``current_learning_rate``, ``evaluate`` and ``predict``. See ``docs/architecture.md``.
"""
import abc
import gc
import json
import logging
import math
import time
from pathlib import Path

import mindspore as ms
import numpy as np
from tqdm.auto import tqdm

from ...data import shard_pipelines, steps_per_epoch
from ...errors import ConfigError, TrainingStopped  # noqa: F401 (TrainingStopped re-exported)
from ...parallel import distribute_network, init_parallel, parallel_settings
from ...parallel.recompute import apply_recompute
from ...registry import MindFormerModuleType, MindFormerRegister
from ...utils.graph import run_in_graph_mode
from ...utils.io import atomic_write
from ...utils.random import no_init_weights
from ..checkpointing import (TRAIN_LOG, check_resume_settings, list_checkpoints, load_checkpoint, new_run_id,
                             read_best, read_trainer_state, refuse_previous_run, remove_previous_run,
                             remove_stale_temporaries, resolve_checkpoint, rewind_run, save_best_model,
                             save_checkpoint)
from ..optim import build_lr_schedule, build_optimizer, current_lr
from ..run_config import build_image_processor, build_source, build_tokenizer, validate_run_config
from ..start_weights import choose_architecture, describe_weights
from ..train_step import AccumulateStep, ApplyStep, TrainStep

logger = logging.getLogger(__name__)


def write_json(path, data):
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True, default=float), encoding="utf-8")


class BaseTrainer(abc.ABC):
    """Holds the run config and builds what a task needs, lazily.

    Class attributes a task sets: ``name`` (the MindFormers task name), ``default_arch`` (the registered model
    built when the run config names no ``model.arch.type``), ``default_config`` (the run YAML, relative to
    ``mindram/configs``, of ``Trainer(task=name)`` without a config) and ``requires_pretrained_weights``
    (``Trainer(model=<name>)`` must find that name's converted checkpoint instead of starting from random
    weights: a task without a training stage). ``default_metric_for_best_model``: the :meth:`evaluate` metric
    that picks ``output_dir/best/`` during training when ``runner_config.metric_for_best_model`` is unset
    (None: no ``best/`` unless it is set).
    """

    name = None
    default_arch = None
    default_config = None
    requires_pretrained_weights = False
    default_metric_for_best_model = None
    train_epoch = 0   # the epoch training reads (set by train(); for host-side per-sample draws in train_inputs)

    def __init__(self, config, model=None, train_source=None, eval_source=None):
        self.config = config
        self.args = validate_run_config(config, default_arch=self.default_arch)
        self._model = model
        if model is not None:
            logger.info("start weights: the %s instance given to the Trainer (its weights in memory)",
                        type(model).__name__)
        given = {"train_dataset": train_source, "eval_dataset": eval_source}
        self._sources = {section: source for section, source in given.items() if source is not None}
        self.output_dir = Path(self.args.output_dir)
        self._check_evaluation_data()
        self.parallel = init_parallel(parallel_settings(config))   # rank 0 of 1 unless use_parallel
        ms.set_seed(self.args.seed)
        np.random.seed(self.args.seed)

    # ---- building blocks ----
    @property
    def model(self):
        if self._model is None:
            self._model = self.build_model()
        return self._model

    @property
    def model_built(self):
        """Whether the model exists already (given, loaded or trained here)."""
        return self._model is not None

    def use_checkpoint(self, load):
        """Build the model from ``load`` (a name, directory or checkpoint) on its next use, dropping the current
        one (the run config's ``load_checkpoint`` is set to it)."""
        self.config.load_checkpoint = str(load)
        self._model = None
        gc.collect()   # a MindSpore Cell is freed only by the cyclic GC: not beside the next model

    def build_model(self):
        """The model the run starts from, logged first (:meth:`start_weights`): random initialisation of
        ``model.model_config``, or the ``load_checkpoint`` weights in the architecture they declare
        (:func:`~mindram.trainer.start_weights.choose_architecture`)."""
        model_cfg = self.config.get("model") or {}
        arch = (model_cfg.get("arch") or {}).get("type", self.default_arch)
        cls = MindFormerRegister.get_cls(MindFormerModuleType.MODELS, arch)
        run_config = None
        if model_cfg.get("model_config") is not None:
            run_config = cls.config_class.from_dict(model_cfg["model_config"].to_dict())
        weights = self.start_weights(cls)
        if weights is None:
            if run_config is None:
                raise ConfigError("run config has neither model.model_config nor load_checkpoint: nothing to build")
            logger.info("start weights: random init (load_checkpoint is not set): %s built from model.model_config",
                        arch)
            return cls(run_config)
        logger.info("start weights: %s", describe_weights(weights))
        cls, config = choose_architecture(cls, run_config, weights, self.config.get("load_checkpoint"))
        with no_init_weights():   # loaded strictly next
            model = cls(config)
        self._load_initial_weights(model, weights.file)
        logger.info("initialised %s from %s", cls.__name__, self.config.get("load_checkpoint"))
        return model

    def start_weights(self, cls=None):
        """The weights the run starts from: the :class:`~mindram.models.modeling_utils.LocatedWeights` of
        ``load_checkpoint`` (a name is downloaded and converted on first use when it can be), or None (random
        initialisation). :class:`~mindram.errors.CheckpointError` with the expected path and the convert command
        when the named weights are absent and cannot be fetched. ``cls``: the model class that reads them
        (default: the run config's ``model.arch.type``, else the task's ``default_arch``)."""
        load = self.config.get("load_checkpoint")
        if not load:
            return None
        if cls is None:
            arch = ((self.config.get("model") or {}).get("arch") or {}).get("type", self.default_arch)
            cls = MindFormerRegister.get_cls(MindFormerModuleType.MODELS, arch)
        return cls.locate_weights(str(load))

    @staticmethod
    def _load_initial_weights(model, file):
        """Load ``file`` into ``model``; of a training checkpoint (``train_state.ckpt``) only the model's own
        parameters (it also holds the optimizer's moments and step), still requiring all of them."""
        return model.load_weights(file, ignore_unexpected=Path(file).name == "train_state.ckpt")

    @classmethod
    def model_class(cls, name_or_path):
        """The model class a name, directory or checkpoint stands for in this task (used by ``Trainer(model=)``)."""
        del name_or_path
        return MindFormerRegister.get_cls(MindFormerModuleType.MODELS, cls.default_arch)

    def image_processor(self):
        """The run config's ``processor.image_processor`` built through the registry for this model (default:
        the model's ``image_processor_class``; the catalog's preprocessing of the weights the model was loaded as
        (``checkpoint_name_or_path``: ``--load_checkpoint clip_vit_l_14.laion2b_s32b_b82k`` gets that model's
        mean/std), else of ``trainer.model_name``, then the section's keys)."""
        name = getattr(self.model.config, "checkpoint_name_or_path", None) or \
            (self.config.get("trainer") or {}).get("model_name")
        return build_image_processor(self.config.get("processor"), self.model, name=name)

    def tokenizer(self):
        """The run config's ``processor.tokenizer`` built through the registry, else the model's tokenizer."""
        return build_tokenizer(self.config.get("processor"), self.model)

    def source(self, section):
        """The record source of ``section``: the one given to the Trainer, else built from the run config's
        ``data_loader`` once per task (annotations are parsed once, not again for every epoch or evaluation)."""
        if section not in self._sources:
            cfg = self.config.get(section)
            if cfg is None:
                raise ConfigError(f"no {section} configured: pass {section}= to the Trainer or set "
                                  f"{section}.data_loader in the run config (or --{section}_dir)")
            self._sources[section] = build_source(cfg["data_loader"].to_dict())
        return self._sources[section]

    @abc.abstractmethod
    def dataset(self, section, batch_size, shuffle, start_epoch=0, start_step=0, train_transform=False,
                drop_remainder=True, return_index=False):
        """The batched ``mindspore.dataset`` pipeline over ``section``'s source (:meth:`source`), resumable at
        ``(start_epoch, start_step)``; its first columns are what :meth:`train_inputs` passes to the step."""

    def save_metrics(self, name, metrics):
        """Write ``<name>_metrics.json`` into ``output_dir`` atomically (a reader sees the old or the new file).

        Evaluation may run in a training run's output_dir and replaces its ``eval_metrics.json``; only a new
        *training* run refuses a directory holding a previous run (see :meth:`_start_run`). In a data-parallel
        job only rank 0 writes."""
        if not self.parallel.is_main:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.output_dir / f"{name}_metrics.json", metrics)
        logger.info("%s metrics: %s", name, json.dumps(metrics, default=float))

    # ---- training loop ----
    @abc.abstractmethod
    def network_with_loss(self):
        """The cell the training step differentiates: ``network(*train_inputs(batch)) -> loss``, or ``-> (total,
        parts)`` with a ``part_names`` attribute naming the 1-D ``parts`` (logged each on its own)."""

    def train_inputs(self, batch):
        """The training step cell's inputs from one batch of the training pipeline (default: its first two
        columns, e.g. pixels and token ids)."""
        return batch[0], batch[1]

    def build_optimizer(self, schedule):
        """The ``optimizer`` section over the model's trainable parameters."""
        return build_optimizer(self.config.get("optimizer"), self.model.trainable_params(), schedule)

    def current_learning_rate(self, optimizer):
        """Learning rate reported in the training log."""
        return current_lr(optimizer)

    def _build_training(self, total_updates):
        args = self.args
        schedule = build_lr_schedule(self.config.get("lr_schedule"), total_updates)
        self.model.set_train(True)
        apply_recompute(self.model, (self.config.get("recompute_config") or {}).get("recompute"))
        optimizer = self.build_optimizer(schedule)
        dynamic = dict(scale_factor=args.scale_factor, scale_window=args.scale_window) \
            if args.dynamic_loss_scale else None
        kwargs = dict(max_grad_norm=args.max_grad_norm, clamp_max=args.logit_scale_max, loss_scale=args.loss_scale,
                      dynamic=dynamic)
        network = distribute_network(self.network_with_loss(), local_loss=args.local_loss,
                                     gather_with_grad=args.gather_with_grad)
        self.loss_part_names = tuple(getattr(network, "part_names", ()))
        if args.gradient_accumulation_steps == 1:
            return optimizer, TrainStep(network, optimizer, **kwargs), None
        step_cell = AccumulateStep(network, optimizer, **kwargs)
        return optimizer, step_cell, ApplyStep(step_cell, args.gradient_accumulation_steps)

    def _log(self, state, window, optimizer, progress):
        record = {"step": state["global_step"], "epoch": state["epoch"], "loss": float(np.mean(window["loss"])),
                  "lr": self.current_learning_rate(optimizer),
                  "samples_per_s": window["samples"] / max(time.time() - window["start"], 1e-9)}
        if window["parts"]:
            record.update(zip(self.loss_part_names, np.mean(window["parts"], axis=0).tolist()))
        if getattr(self.model, "logit_scale", None) is not None:
            record["logit_scale"] = float(np.exp(self.model.logit_scale.asnumpy()).reshape(-1)[0])
        state["history"].append(record)
        self._append_log(record)
        progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
        parts = "".join(f" {name} {record[name]:.4f}" for name in self.loss_part_names if name in record)
        logger.info("step %d epoch %d loss %.4f%s lr %.3e %.1f samples/s", record["step"], record["epoch"],
                    record["loss"], parts, record["lr"], record["samples_per_s"])
        window.update(loss=[], parts=[], samples=0, start=time.time())

    def _append_log(self, record):
        if self.parallel.is_main:
            with open(self.output_dir / TRAIN_LOG, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    # ---- evaluation during training ----
    def _check_evaluation_data(self):
        """ConfigError when training is to evaluate (``runner_config.eval_steps`` / ``evaluation_strategy``) but
        there is no eval set."""
        strategy = self.args.evaluates
        if strategy is None or "eval_dataset" in self._sources or self.config.get("eval_dataset") is not None:
            return
        key = "runner_config.eval_steps" if strategy == "steps" else "runner_config.evaluation_strategy"
        raise ConfigError(f"{key} is set but there is no eval_dataset: set eval_dataset.data_loader in the run "
                          f"config (or pass eval_dataset= / --eval_dataset_dir), or unset {key}")

    @property
    def best_metric(self):
        """The metric choosing ``best/``: ``runner_config.metric_for_best_model``, else the task's default."""
        return self.args.metric_for_best_model or self.default_metric_for_best_model

    def eval_metric_names(self):
        """The numeric metrics :meth:`evaluate` reports, or None when only an evaluation tells (checked then)."""
        return None

    def _check_best_metric(self, names):
        metric = self.best_metric
        if metric is not None and names is not None and metric not in names:
            raise ConfigError(f"runner_config.metric_for_best_model: {metric!r} is not a metric of task "
                              f"{self.name!r}; available: {', '.join(sorted(names))}")

    def _evaluate_during_training(self, state):
        """Evaluate (the model in eval mode, then back), log an ``eval_*`` record at this update and keep the model
        as ``best/`` when the best metric improved (never replaced by a worse or non-finite value)."""
        training = self.model.training
        self.model.set_train(False)
        try:
            metrics = self.evaluate()
        finally:
            self.model.set_train(training)
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        record = {"step": state["global_step"], "epoch": state["epoch"], **{f"eval_{k}": v for k, v in numeric.items()}}
        state["eval_history"].append(record)
        self._append_log(record)
        metric = self.best_metric
        if metric is None:
            logger.info("eval at update %d: %s (no metric_for_best_model: no best/)", record["step"], numeric)
            return
        self._check_best_metric(numeric)
        value, best, greater = numeric[metric], state.get("best"), self.args.best_is_greater(metric)
        if best is not None and best["metric"] != metric:
            logger.warning("metric_for_best_model is now %r (the best so far was chosen by %r): starting over",
                           metric, best["metric"])
            best = None
        improved = math.isfinite(value) and (best is None or (value > best["value"] if greater else
                                                               value < best["value"]))
        if improved:
            best = {"step": record["step"], "epoch": record["epoch"], "metric": metric, "value": value,
                    "greater_is_better": greater, "metrics": numeric, "run_id": state.get("run_id")}
            if self.parallel.is_main:
                save_best_model(self.output_dir, self.model, best)
        state["best"] = best
        logger.info("eval at update %d: %s %.4f (best %s)", record["step"], metric, value,
                    "this one" if improved else (f"{best['value']:.4f} at update {best['step']}" if best else "none"))

    def _evaluation_due(self, state, total_updates, epoch_end=False):
        done = state["eval_history"] and state["eval_history"][-1]["step"] == state["global_step"]
        strategy, step = self.args.evaluates, state["global_step"]
        if strategy is None or done:
            return False
        if strategy == "epoch":
            return epoch_end or step == total_updates
        return step % self.args.eval_steps == 0 or step == total_updates

    def _resume_best(self, state):
        """The best so far of a resumed run: its checkpoint's, or the newer ``best/`` of this run already in
        ``output_dir`` (written by the interrupted run after that checkpoint: replaced only by a better one)."""
        state.setdefault("eval_history", [])
        state.setdefault("best", None)
        on_disk = read_best(self.output_dir)
        if on_disk is not None and on_disk.get("run_id") == state.get("run_id") and \
                on_disk.get("step") != (state["best"] or {}).get("step"):
            state["best"] = on_disk

    def _check_finite(self, loss, state):
        if math.isfinite(loss):
            return
        message = (f"non-finite loss {loss} at epoch {state['epoch']} step {state['step_in_epoch']} "
                   f"(update {state['global_step']}); lower the learning rate or enable max_grad_norm; "
                   f"checkpoints already in {self.output_dir} are intact")
        if self.args.stop_on_nonfinite:
            raise TrainingStopped(message)
        logger.warning(message)

    def resume_settings(self, num_samples, total_updates):
        """Settings stored in every checkpoint and compared on resume (see ``check_resume_settings``).

        ``fixed``: what decides the data order and the batches (batch size, accumulation, seed, augmentation,
        shuffling, training-set size); a resume that changes one is refused (:class:`ConfigError` naming key,
        saved and new value) since the saved position in the data would mean other samples. Its
        ``runner_config.batch_size`` is the *global* batch (per-rank batch × ranks): a checkpoint resumes exactly
        on another number of ranks whose global batch is the same (2 ranks × 16 → 1 rank × 32). ``adjustable``:
        what only changes the updates from the resumed step on (the resolved ``lr_schedule``, optimizer
        hyper-parameters, clipping, logit-scale clamp, loss scale, the metric choosing ``best/``); a resume that
        changes one goes on with a warning naming it, and is then not the same as an uninterrupted run.
        Changing ``max_steps``/``epochs`` (train longer or stop earlier) is silent unless
        ``lr_schedule.total_steps`` is unset and so derived from them: then it is the warned change
        ``lr_schedule.total_steps``. Tasks with more such settings extend both mappings.
        """
        def runner(*keys):
            return {key: getattr(self.args, key) for key in keys}

        schedule = dict(self.config.get("lr_schedule") or {})
        schedule.setdefault("total_steps", total_updates)
        data = {"num_samples": num_samples, "shuffle": (self.config.get("train_dataset") or {}).get("shuffle", True)}
        fixed = runner("batch_size", "gradient_accumulation_steps", "seed", "train_transform")
        fixed["batch_size"] = self.global_batch_size   # the data position counts global batches, whatever N
        return {"fixed": {"runner_config": fixed, "train_dataset": data},
                "adjustable": {"runner_config": runner("max_grad_norm", "logit_scale_max", "loss_scale",
                                                       "metric_for_best_model", "greater_is_better"),
                               "lr_schedule": schedule, "optimizer": dict(self.config.get("optimizer") or {})}}

    @property
    def global_batch_size(self):
        """Samples per micro-step over all ranks: ``runner_config.batch_size`` (per rank) × ranks."""
        return self.args.batch_size * self.parallel.world_size

    def _start_run(self, resume, settings):
        """Claim ``output_dir`` for this run before anything is built; return the run id.

        A new run refuses an output_dir holding a previous run (:class:`OutputExistsError`) unless
        ``overwrite_output_dir``, which deletes that run first. A resumed run checks its settings, keeps the
        checkpoint's run id and, when the checkpoint is in ``output_dir``, drops the log records the interrupted
        run wrote after it; resuming before the run's latest checkpoint is refused unless
        ``overwrite_output_dir`` (which deletes the later ones). Temporaries of a killed save are removed.
        In a data-parallel job every rank checks, only rank 0 changes the directory.
        """
        saved = read_trainer_state(resume) if resume is not None else None
        if saved is not None:
            check_resume_settings(resume, saved.get("settings"), settings)
        own_dir = resume is not None and resume.resolve().parent == self.output_dir.resolve()
        if not self.parallel.is_main:
            if not (own_dir or self.args.overwrite_output_dir):
                refuse_previous_run(self.output_dir)
            return new_run_id() if saved is None else saved.get("run_id")
        if own_dir:
            pass  # the resumed run's own directory: rewound below
        elif self.args.overwrite_output_dir:
            remove_previous_run(self.output_dir)
        else:
            refuse_previous_run(self.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.output_dir)
        run_id = new_run_id() if saved is None else saved.get("run_id")  # None: a checkpoint without run ids
        if own_dir:
            rewind_run(self.output_dir, {"global_step": saved["global_step"], "run_id": run_id},
                       discard_later=self.args.overwrite_output_dir)
        logger.info("%s training run %s in %s", "resuming" if saved else "new", run_id, self.output_dir)
        return run_id

    def train(self):
        """Train for ``runner_config.epochs`` (or ``max_steps`` optimizer updates); resumable exactly.

        Writes ``checkpoint-<update>/``, ``train_log.jsonl``, ``final/`` and ``train_metrics.json`` into
        ``output_dir``, which this run owns (see :meth:`_start_run`); the summary carries the ``run_id``. In a
        data-parallel job each rank trains on its shard of every global batch and only rank 0 writes.

        Log records (and the summary's ``history``) hold the loss averaged over ``logging_steps`` and, for a loss
        with parts, each part (``loss_tag``, ...; the summary adds ``final_<part>``). With ``eval_steps`` (or
        ``evaluation_strategy: epoch``) the run evaluates every ``eval_steps`` updates (each epoch) and after the
        last update: an ``eval_<metric>`` record per evaluation, and ``best/`` (``save_pretrained`` +
        ``best_metrics.json``) holds the model of the best ``metric_for_best_model`` so far, also kept in every
        checkpoint's trainer state, so a resumed run goes on comparing against it.
        """
        args = self.args
        self.model  # pylint: disable=pointless-statement  # built first: its start weights logged (or refused)
        with shard_pipelines(self.parallel.world_size, self.parallel.rank):
            num_samples = len(self.source("train_dataset"))   # a streaming source's epoch depends on the ranks
        steps_epoch = steps_per_epoch(num_samples, self.global_batch_size, True)
        total_updates = args.max_steps or max(1, steps_epoch // args.gradient_accumulation_steps) * args.epochs
        if args.evaluates is not None:
            self._check_best_metric(self.eval_metric_names())
        resume = resolve_checkpoint(args.resume_from_checkpoint, self.output_dir)
        settings = self.resume_settings(num_samples, total_updates)
        run_id = self._start_run(resume, settings)
        optimizer, step_cell, apply_cell = self._build_training(total_updates)
        state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "micro_step": 0, "history": [],
                 "eval_history": [], "best": None}
        if resume is not None:
            state = load_checkpoint(resume, step_cell)
            logger.info("resumed from %s at epoch %d, step %d (update %d of %d)", resume, state["epoch"],
                        state["step_in_epoch"], state["global_step"], total_updates)
        state.update(run_id=run_id, settings=settings)
        if resume is not None:
            self._resume_best(state)

        main = self.parallel.is_main

        def save():
            if main:
                save_checkpoint(self.output_dir, step_cell, state, args.keep_checkpoint_max, self.model.config,
                                getattr(self.model, "flat_checkpoint_parameters", ()))

        progress = tqdm(total=total_updates, initial=state["global_step"], desc=f"train {self.name}", unit="step",
                        disable=not main)
        window = {"loss": [], "parts": [], "samples": 0, "start": time.time()}
        try:
            while state["global_step"] < total_updates:
                self.train_epoch = state["epoch"]
                with shard_pipelines(self.parallel.world_size, self.parallel.rank):
                    data = self.dataset("train_dataset", args.batch_size, True, start_epoch=state["epoch"],
                                        start_step=state["step_in_epoch"], train_transform=args.train_transform)
                for batch in data.create_tuple_iterator(num_epochs=1):
                    values = run_in_graph_mode(step_cell, *self.train_inputs(batch)).asnumpy().reshape(-1)
                    loss = float(values[0])   # then the loss parts, for a network with parts
                    state["micro_step"] += 1
                    state["step_in_epoch"] += 1
                    self._check_finite(loss, state)
                    window["loss"].append(loss)
                    if self.loss_part_names:
                        window["parts"].append(values[1:])
                    window["samples"] += int(batch[0].shape[0]) * self.parallel.world_size
                    if apply_cell is not None:
                        if state["micro_step"] % args.gradient_accumulation_steps:
                            continue
                        run_in_graph_mode(apply_cell)
                    state["global_step"] += 1
                    progress.update(1)
                    if state["global_step"] % args.logging_steps == 0 or state["global_step"] == total_updates:
                        self._log(state, window, optimizer, progress)
                    if self._evaluation_due(state, total_updates):
                        self._evaluate_during_training(state)
                    if args.save_steps and state["global_step"] % args.save_steps == 0:
                        save()
                    if state["global_step"] >= total_updates:
                        break
                else:
                    if self._evaluation_due(state, total_updates, epoch_end=True):
                        self._evaluate_during_training(state)
                    state["epoch"] += 1
                    state["step_in_epoch"] = 0
                    if not args.save_steps:
                        save()
        finally:
            progress.close()
        saved = list_checkpoints(self.output_dir, run_id) if main else []
        if main and (not saved or saved[-1].name != f"checkpoint-{state['global_step']}"):
            save()
        self.model.set_train(False)
        if main:
            self.model.save_pretrained(self.output_dir / "final")
        last = state["history"][-1] if state["history"] else {}
        # an epoch whose last batch was the run's last step ended too (the loop stopped before counting it)
        epochs_completed = state["epoch"] + (state["step_in_epoch"] >= steps_epoch)
        summary = {"run_id": run_id, "global_step": state["global_step"], "epochs_completed": epochs_completed,
                   "final_loss": last.get("loss"), "history": state["history"]}
        summary.update({f"final_{name}": last.get(name) for name in self.loss_part_names})
        if args.evaluates is not None:
            summary.update(eval_history=state["eval_history"], best=state["best"])
        self.save_metrics("train", summary)
        return summary

    def evaluate(self):
        raise ConfigError(f"task {self.name!r} does not support evaluation")

    def predict(self, input_data, top_k=None):
        raise ConfigError(f"task {self.name!r} does not support predict")

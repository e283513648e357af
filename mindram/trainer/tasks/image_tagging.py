"""Task ``image_tagging``: train, evaluate and predict RAM / RAM++ (recognize-anything; docs/ram.md).

Training loss (docs/ram.md#training): :class:`mindram.losses.TaggingWithLoss` (tag loss, plus distillation and RAM++
alignment when ``tagging.teacher`` is set), one graph per step through :class:`BaseTrainer`'s loop
(accumulation, clipping, checkpoints, exact resume). The frozen teacher (``mindram.CLIPModel``) runs outside
the step graph on the dataset's ``teacher_pixel_values`` / ``input_ids`` columns, so it is neither trained nor
written to the checkpoints; with ``tagging.teacher_features`` its precomputed features are read instead and it is
never run (:mod:`mindram.trainer.teacher_features`). ``label_embed`` is
frozen (a non-trainable parameter of the model). RAM's caption-generation loss (``loss_t2t``) trains with
``tagging.caption_loss: true`` (:mod:`mindram.trainer.caption_training`); without it RAM trains with tag +
distillation losses and its ``tag_encoder``/``text_decoder`` (if built) are left out of the optimizer. The terms
are weighted by ``tagging.loss_weights`` and logged each on its own (:mod:`mindram.losses.tagging_loss`).
Student images use the model's own preprocessing (``RAMImageProcessor``: ImageNet statistics, as at inference;
the reference trains with CLIP statistics), overridable in ``processor.image_processor``; the teacher gets its own
(``teacher.image_processor``: OpenAI CLIP statistics, or the catalog's for its weights).

Layer-wise learning-rate decay (``tagging.layer_decay = d``): :func:`mindram.trainer.optim.layer_decay_adamw`
with the model's ``layer_id`` (the SimMIM/Swin fine-tuning rule of ``models/swin/layer_ids.py``; full lr
for everything after the encoder). Weight decay follows the framework's AdamWeightDecay rule (none on norms,
biases, 1-D tensors); the reference decays everything.

Evaluation (docs/ram.md#evaluation): scores = sigmoid of the tag logits of the dataset's tags (closed set: the model's
label embeddings of those tags, by name; ``tagging.open_set`` builds open-set embeddings instead, beside the
model, which keeps its vocabulary and train/eval mode), a tag predicted when score >= threshold
(``tagging.threshold``, else ``tagging.threshold_file`` with one value per dataset tag, else the model's
per-tag thresholds); mAP, CP, CR, CF1 in ``eval_metrics.json``. Unreadable images are left out and counted
(``num_skipped``).
"""
import json
import logging
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops
from tqdm.auto import tqdm

from ...errors import ConfigError
from ...losses import AsymmetricLoss, TaggingWithLoss
from ...losses.caption_loss import CaptionLoss
from ...metrics import tagging_metrics
from ...models.clip import CLIPConfig, CLIPModel, tokenize
from ...models.ram import model_class_for
from ...models.ram.tags import read_thresholds
from ...registry import MindFormerModuleType, MindFormerRegister
from ...utils.arrays import l2_normalize
from ...utils.graph import run_in_graph_mode
from ...utils.validation import check_threshold
from ..caption_training import caption_inputs, caption_tokenizer, check_caption_training
from ..optim import AdamWeightDecay, build_optimizer, current_lr, layer_decay_adamw
from .base import BaseTrainer
from .tagging_options import parse_tagging_options, resolve_data_file

logger = logging.getLogger(__name__)

TAG_FILE_KEYS = ("tag_list", "tag_list_chinese", "threshold_file")
CAPTION_MODULES = ("tag_encoder.", "text_decoder.")
TAGGING_METRICS = ("mAP", "CP", "CR", "CF1", "num_images", "num_classes", "num_skipped")


@MindFormerRegister.register(MindFormerModuleType.TRAINER)
class ImageTaggingTrainer(BaseTrainer):
    """RAM / RAM++ image tagging: ``train`` (losses above), ``evaluate`` (mAP/CP/CR/CF1), ``predict``
    (the ``image_tagging`` pipeline's output). Options: the ``tagging`` section
    (:class:`~mindram.trainer.tasks.tagging_options.TaggingOptions`)."""

    name = "image_tagging"
    default_arch = "RAMPlus"
    default_config = "ram/run_ram_plus_swin_l_384_finetune.yaml"
    default_metric_for_best_model = "mAP"

    def __init__(self, config, model=None, train_source=None, eval_source=None):
        super().__init__(config, model=model, train_source=train_source, eval_source=eval_source)
        self.tagging = parse_tagging_options(config.get("tagging"))
        self._teacher, self._teacher_built, self._base_schedule = None, False, None
        self._teacher_store = None

    @classmethod
    def model_class(cls, name_or_path):
        """RAM or RAMPlus, by the name or the config stored with the checkpoint."""
        return model_class_for(name_or_path)

    def resume_settings(self, num_samples, total_updates):
        """The base task's settings plus the tagging train transform (crop scale, flip), which changes the
        batches (refused on resume), and the loss terms, which change the updates (warned)."""
        settings = super().resume_settings(num_samples, total_updates)
        settings["fixed"]["tagging"] = {"train_scale": list(self.tagging.train_scale),
                                        "horizontal_flip": bool(self.tagging.horizontal_flip)}
        settings["adjustable"]["tagging"] = {key: getattr(self.tagging, key) for key in (
            "distillation", "alignment", "tag_loss", "alignment_loss", "loss_weights", "caption_loss",
            "layer_decay")}
        if self.tagging.caption_loss:  # model, data and tokenizer checked here, before the run starts
            check_caption_training(self.model, self.source("train_dataset"))
            self._caption_tokenizer = caption_tokenizer(self.model, self.tagging.caption_tokenizer)
        if self.tagging.teacher_features:  # the store is opened and checked here, before the run starts
            settings["adjustable"]["tagging"]["teacher_features"] = str(self.teacher_features.directory)
        return settings

    # ---- model, teacher, processors, data ----
    def build_model(self):
        model_cfg = (self.config.get("model") or {}).get("model_config")
        if model_cfg is not None:
            for key in TAG_FILE_KEYS:
                if model_cfg.get(key):
                    model_cfg[key] = resolve_data_file(model_cfg[key])
        model = super().build_model()
        if not hasattr(model, "head_logits"):
            raise ConfigError(f"task 'image_tagging' needs a RAM or RAMPlus model (model.arch.type), "
                              f"got {type(model).__name__}")
        if self.tagging.custom_tags:
            from ...models.ram.custom_tags import apply_custom_tag_files
            model = apply_custom_tag_files(model, self.tagging.custom_tags, self.tagging.custom_tag_descriptions,
                                           self._open_set_clip())
        return model

    @property
    def teacher(self):
        """The frozen CLIP teacher, or None (``tagging.teacher`` null)."""
        if not self._teacher_built:
            self._teacher, self._teacher_built = self._build_teacher(), True
        return self._teacher

    @property
    def teacher_features(self):
        """The stored teacher features of ``tagging.teacher_features`` (opened and checked once), or None."""
        if self._teacher_store is None and self.tagging.teacher_features:
            from ..teacher_features import open_checked_store
            self._teacher_store = open_checked_store(self)
        return self._teacher_store

    def _build_teacher(self):
        spec = self.tagging.teacher
        if spec is None or self.tagging.teacher_features or not (self.tagging.distillation or
                                                                 self.uses_alignment_model):
            return None
        return self.load_teacher()

    def load_teacher(self):
        """The configured CLIP teacher, frozen (also where a feature store replaces it: extraction, check)."""
        spec = self.tagging.teacher
        if isinstance(spec, dict):
            state = np.random.get_state()
            np.random.seed(self.args.seed)  # the same random teacher in every run (and resumed run)
            try:
                teacher = CLIPModel(CLIPConfig.from_dict(spec))
            finally:
                np.random.set_state(state)
            logger.warning("tagging.teacher is a randomly initialised CLIP (meant for tests and demos)")
        else:
            teacher = CLIPModel.from_pretrained(spec)
        width = self.model.config.label_embed_dim
        if teacher.config.projection_dim != width:
            raise ConfigError(f"tagging.teacher: the CLIP projection_dim {teacher.config.projection_dim} must equal "
                              f"the model's label_embed_dim {width} (distillation target, alignment queries)")
        teacher.set_train(False)
        for param in teacher.get_parameters():
            param.requires_grad = False
        return teacher

    @property
    def uses_alignment_model(self):
        return self.tagging.alignment and self.model.config.model_type == "ram_plus"

    @property
    def has_teacher(self):
        """A teacher runs online, or its features come from ``tagging.teacher_features``."""
        return self.teacher is not None or self.teacher_features is not None

    @property
    def uses_distillation(self):
        return self.tagging.distillation and self.has_teacher

    @property
    def uses_alignment(self):
        return self.uses_alignment_model and self.has_teacher

    @property
    def context_length(self):
        return self.teacher.context_length if self.teacher is not None else 77

    def dataset(self, section, batch_size, shuffle, start_epoch=0, start_step=0, train_transform=False,
                drop_remainder=True, return_index=False):
        from ...data.tagging import build_tagging_dataset
        cfg = self.config.get(section) or {}
        source = self.source(section)
        training = section == "train_dataset"
        if not hasattr(source, "num_tags"):
            raise ConfigError(f"{section}: {type(source).__name__} is not a tagging source (RAMTaggingJson, "
                              f"TaggingAnnotations, SyntheticTags)")
        if training and source.num_tags != self.model.config.num_tags:
            raise ConfigError(f"{section}: {type(source).__name__} has {source.num_tags} tags, the model "
                              f"{self.model.config.num_tags} (model.model_config.num_tags / tag_list)")
        align = training and self.uses_alignment
        store = self.teacher_features if training else None
        stored = None if store is None else store.view(image=self.uses_distillation, text=align)
        online = training and store is None
        return build_tagging_dataset(
            source, self.image_processor(), batch_size=batch_size, shuffle=cfg.get("shuffle", shuffle),
            num_workers=cfg.get("num_workers", self.args.num_workers), drop_remainder=drop_remainder,
            seed=self.args.seed, train_transform=train_transform, train_scale=tuple(self.tagging.train_scale),
            horizontal_flip=self.tagging.horizontal_flip,
            teacher_processor=self.teacher.image_processor if online and self.uses_distillation else None,
            tokenizer_fn=tokenize if align and online else None,
            context_length=self.context_length if align and online else 77, teacher_features=stored,
            start_epoch=start_epoch, start_step=start_step,
            return_index=return_index or (training and self.tagging.caption_loss))   # caption inputs: last column

    # ---- training ----
    def network_with_loss(self):
        return TaggingWithLoss(self.model, AsymmetricLoss(**self.tagging.tag_loss), self.uses_distillation,
                               self.uses_alignment, AsymmetricLoss(**self.tagging.alignment_loss),
                               weights=self.tagging.loss_weights,
                               caption_loss=CaptionLoss(self.model) if self.tagging.caption_loss else None)

    def train_inputs(self, batch):
        """(pixels, labels[, teacher image features][, normalised teacher text features of the captions])."""
        if self.teacher_features is not None:  # stored features: the columns are the inputs
            return tuple(batch[:2 + self.uses_distillation + self.uses_alignment]) + self.caption_inputs(batch)
        inputs, at = [batch[0], batch[1]], 2
        if self.uses_distillation:
            inputs.append(run_in_graph_mode(self.teacher.visual, batch[at]))
            at += 1
        if self.uses_alignment:
            text = run_in_graph_mode(self.teacher.text, batch[at]).asnumpy()
            inputs.append(Tensor(l2_normalize(text), ms.float32))  # F.normalize
        return tuple(inputs) + self.caption_inputs(batch)

    def caption_inputs(self, batch):
        """With ``tagging.caption_loss``: the caption loss's inputs, tokenised on the host from the records of the
        batch's index column (:func:`mindram.trainer.caption_training.caption_inputs`); else ``()``."""
        if not self.tagging.caption_loss:
            return ()
        return caption_inputs(self.source("train_dataset"), self.model.tag_list, self._caption_tokenizer,
                              batch[-1].asnumpy(), self.args.seed, self.train_epoch)

    def trainable_parameters(self):
        """The model's trainable parameters minus RAM's caption modules unless the caption loss trains them."""
        return [p for p in self.model.trainable_params()
                if self.tagging.caption_loss or not p.name.startswith(CAPTION_MODULES)]

    def build_optimizer(self, schedule):
        params = self.trainable_parameters()
        if self.tagging.layer_decay is None:
            return build_optimizer(self.config.get("optimizer"), params, schedule)
        cfg = dict(self.config.get("optimizer") or {"type": "AdamWeightDecay"})
        cls = MindFormerRegister.get_cls(MindFormerModuleType.OPTIMIZER, cfg.pop("type", "AdamWeightDecay"))
        if not (isinstance(cls, type) and issubclass(cls, AdamWeightDecay)):
            raise ConfigError(f"tagging.layer_decay needs optimizer.type AdamWeightDecay (AdamW), got {cls.__name__}")
        self._base_schedule = schedule
        return layer_decay_adamw(params, schedule, self.model.layer_id, self.model.num_layer_ids,
                                 self.tagging.layer_decay, **cfg)

    def current_learning_rate(self, optimizer):
        """The schedule's (top-layer) rate; with layer decay lower layers get a fraction of it."""
        if self._base_schedule is None:
            return current_lr(optimizer)
        return float(self._base_schedule.value(int(optimizer.global_step.asnumpy().reshape(-1)[0])))

    # ---- evaluation and prediction ----
    def _eval_vocabulary(self, source):
        """(label embeddings of the dataset's tags, their thresholds) — closed set by name, or open set.

        The model is not changed: an open set is built beside it (``RAMBase.open_set_vocabulary``)."""
        model, names = self.model, getattr(source, "tag_names", None)
        vocabulary = model.vocabulary()
        if names is None:  # the source indexes the model's vocabulary directly (RAM json)
            if source.num_tags != len(vocabulary.names):
                raise ConfigError(f"eval_dataset has {source.num_tags} tags, the model {len(vocabulary.names)}")
            index = np.arange(source.num_tags)
        else:
            positions = {}
            for i, name in enumerate(vocabulary.names):
                positions.setdefault(name, i)
            missing = [n for n in names if n not in positions]
            if missing and not self.tagging.open_set:
                raise ConfigError(f"{len(missing)} tag(s) of the eval set are not in the model's vocabulary "
                                  f"(e.g. {missing[:5]}); set tagging.open_set: true to evaluate them open-set")
            if missing:
                vocabulary = model.open_set_vocabulary(list(names), descriptions=self._open_set_descriptions(),
                                                       clip_model=self._open_set_clip())
                index = np.arange(len(names))
            else:
                index = np.asarray([positions[n] for n in names])
        embed = vocabulary.label_embed if vocabulary.label_embed is not None else model.default_label_embed()
        embed = Tensor(np.ascontiguousarray(embed.asnumpy()[index]), ms.float32)
        if self.tagging.threshold is not None:
            threshold = check_threshold(self.tagging.threshold, "tagging.threshold")
            thresholds = np.full(len(index), threshold, np.float32)
        elif self.tagging.threshold_file:
            thresholds = read_thresholds(self.tagging.threshold_file, len(index), 0.5)
        else:
            thresholds = vocabulary.thresholds[index]
        return embed, thresholds

    def _open_set_descriptions(self):
        """``tagging.open_set_descriptions`` read (a json file), or None."""
        path = self.tagging.open_set_descriptions
        if not path:
            return None
        try:
            return json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"tagging.open_set_descriptions: cannot read {path} as json "
                              f"({type(e).__name__}: {e})") from e

    def _open_set_clip(self):
        """``tagging.open_set_clip``: a catalog name, or a CLIP directory/checkpoint (loaded here)."""
        clip = self.tagging.open_set_clip
        return CLIPModel.from_pretrained(clip) if Path(clip).expanduser().exists() else clip

    def evaluate(self):
        """mAP / CP / CR / CF1 on ``eval_dataset`` (module docstring), written to ``eval_metrics.json``.

        The model's vocabulary and train/eval mode are the same after as before."""
        source = self.source("eval_dataset")
        model = self.model
        training = model.training
        model.set_train(False)
        try:
            return self._evaluate(source, model)
        finally:
            model.set_train(training)

    def eval_metric_names(self):
        """What :meth:`evaluate` reports (:func:`mindram.metrics.tagging_metrics` and ``num_skipped``)."""
        return TAGGING_METRICS

    def _evaluate(self, source, model):
        scores, targets, thresholds, num_skipped = self.eval_scores(source, model)
        metrics = tagging_metrics(scores, targets, thresholds)
        metrics["num_skipped"] = num_skipped
        self.save_metrics("eval", metrics)
        return metrics

    def eval_scores(self, source, model):
        """``(scores (N, T), targets (N, T), thresholds (T,), num_skipped)`` over the readable images of
        ``source`` for its T tags (the model in eval mode; see :meth:`evaluate`)."""
        embed, thresholds = self._eval_vocabulary(source)
        data = self.dataset("eval_dataset", self.args.eval_batch_size or self.args.batch_size, shuffle=False,
                            drop_remainder=False, return_index=True)
        scores, targets, seen = [], [], set()
        for row in tqdm(data.create_dict_iterator(num_epochs=1, output_numpy=True), total=data.get_dataset_size(),
                        desc="evaluate", unit="batch"):
            logits = run_in_graph_mode(model, Tensor(row["pixel_values"]), embed)
            keep = []
            for i, index in enumerate(row["index"].tolist()):  # a substituted (unreadable) image is not counted twice
                if index not in seen:
                    seen.add(index)
                    keep.append(i)
            scores.append(ops.sigmoid(logits).asnumpy()[keep])
            targets.append(row["labels"][keep])
        return np.concatenate(scores), np.concatenate(targets), thresholds, len(source) - len(seen)

    def predict(self, input_data, top_k=None, output_format=None, language=None):
        """Tags per image in the ``image_tagging`` pipeline's format: ``[[{'label', 'label_cn', 'score',
        'class_id'}, ...], ...]`` sorted by score (threshold: ``tagging.threshold`` or the per-tag ones), or
        PaddleClas' dict with ``output_format="paddleclas"`` (default: ``tagging.output_format``/``language``)."""
        from ...pipeline import pipeline
        tagger = pipeline("image_tagging", model=self.model, image_processor=self.image_processor())
        if top_k is None:
            top_k = (self.config.get("predict") or {}).get("top_k")
        output_format = output_format or self.tagging.output_format
        language = language or (self.tagging.language if output_format == "paddleclas" else None)
        return tagger(input_data, threshold=self.tagging.threshold, top_k=top_k, output_format=output_format,
                      **({"language": language} if language else {}))

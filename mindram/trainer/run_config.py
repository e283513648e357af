"""Run configs: the sections a Trainer reads, their validation, and building their objects.

Top-level keys of a run YAML (MindFormers layout)::

    seed, output_dir, run_mode, load_checkpoint, trainer {type, model_name},
    model {arch {type}, model_config {...}},
    processor {type, image_processor {type, ...}, tokenizer {type, ...}, context_length},
    train_dataset / eval_dataset {data_loader {type, dataset_dir|..., split, ...}, shuffle, num_workers},
    runner_config {TrainingArguments fields: ..., logging_steps, save_steps, eval_steps, evaluation_strategy,
                   metric_for_best_model, greater_is_better, ...}, optimizer {type, ...}, lr_schedule {type, ...},
    zero_shot {templates, class_names}, predict {candidate_labels, top_k},
    use_parallel, parallel {parallel_mode, gradients_mean, enable_parallel_optimizer},
    parallel_config {data_parallel, model_parallel, pipeline_stage}   (mindram.parallel.context)
    recompute_config {recompute: true | [cell names]}   (mindram.parallel.recompute)
    tagging {teacher, distillation, alignment, tag_loss, alignment_loss, loss_weights {tag, dis, alignment, t2t},
             caption_loss, caption_tokenizer,
             layer_decay, train_scale, horizontal_flip, threshold, threshold_file, open_set, open_set_descriptions,
             open_set_clip, output_format, language, teacher_features, custom_tags,
             custom_tag_descriptions}   (task image_tagging)

Everything is validated before any work starts: unknown keys, wrong types, sections that are not mappings,
unregistered ``type`` names, out-of-range optimizer / schedule values and missing dataset paths are
:class:`ConfigError` naming the key and the allowed values.
"""
import inspect
import reprlib
from pathlib import Path

from ..config import MindFormerConfig
from ..errors import ConfigError
from ..parallel import parallel_settings
from ..parallel.recompute import check_recompute_config
from ..registry import MindFormerModuleType, MindFormerRegister
from .optim import DEFAULT_LR_SCHEDULE, DEFAULT_OPTIMIZER, check_section_args
from .training_args import RUN_MODES, TrainingArguments

TOP_LEVEL_KEYS = {"seed", "output_dir", "run_mode", "load_checkpoint", "trainer", "model", "processor",
                  "train_dataset", "eval_dataset", "runner_config", "optimizer", "lr_schedule", "zero_shot",
                  "predict", "context", "aliases", "device_target", "tagging", "use_parallel", "parallel",
                  "parallel_config", "auto_trans_ckpt", "src_strategy_path_or_dir", "recompute_config"}
#: MindFormers keys for sharded (model-parallel) checkpoints: accepted unset/False, refused set (with the reason)
SHARDED_CHECKPOINT_KEYS = {
    "auto_trans_ckpt": "automatic transformation of sharded (model-parallel) checkpoints is not supported on "
                       "this backend: mindram checkpoints are never sharded (data parallel only); load them directly",
    "src_strategy_path_or_dir": "sharding strategy files are not supported on this backend: mindram checkpoints "
                                "are never sharded (data parallel only)",
}
DATASET_KEYS = {"data_loader", "shuffle", "num_workers"}
SECTION_KEYS = {
    "trainer": {"type", "model_name"},
    "model": {"arch", "model_config"},
    "processor": {"image_processor", "tokenizer", "context_length", "type"},
    "zero_shot": {"templates", "class_names"},
    "predict": {"candidate_labels", "top_k", "hypothesis_template"},
    "context": {"mode", "device_target", "device_id"},
    "tagging": {"teacher", "distillation", "alignment", "tag_loss", "alignment_loss", "loss_weights", "caption_loss",
                "caption_tokenizer", "layer_decay", "train_scale", "horizontal_flip", "threshold", "threshold_file",
                "open_set", "open_set_descriptions", "open_set_clip", "output_format", "language", "teacher_features",
                "custom_tags", "custom_tag_descriptions"},
}
PATH_KEYS = ("dataset_dir", "root", "path", "annotation_file", "taglist_file", "image_dir")
#: Sections (dotted, parents first) that are mappings when set; a ``type`` in one names a registered class
MAPPING_SECTIONS = ("trainer", "model", "model.arch", "model.model_config", "processor", "processor.image_processor",
                    "processor.tokenizer", "train_dataset", "train_dataset.data_loader", "eval_dataset",
                    "eval_dataset.data_loader", "runner_config", "optimizer", "lr_schedule", "zero_shot", "predict",
                    "context", "tagging", "parallel", "parallel_config", "recompute_config")


def _check_keys(section, data, allowed):
    if not isinstance(data, dict):
        raise ConfigError(f"{section}: expected a mapping, got {reprlib.repr(data)}")
    unknown = sorted(set(data) - set(allowed), key=str)
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def check_section_types(config):
    """ConfigError naming the key for a section of :data:`MAPPING_SECTIONS` that is set (not null) but not a
    mapping, or whose ``type`` is not a name (a string)."""
    for dotted in MAPPING_SECTIONS:
        parent, _, key = dotted.rpartition(".")
        holder = config.get(parent) if parent else config   # parents are checked first: a mapping or unset
        if not isinstance(holder, dict) or holder.get(key) is None:
            continue
        section = holder[key]
        if not isinstance(section, dict):
            raise ConfigError(f"{dotted}: expected a mapping, got {reprlib.repr(section)}")
        if section.get("type") is not None and not isinstance(section["type"], str):
            raise ConfigError(f"{dotted}.type: expected a registered name (a string), "
                              f"got {reprlib.repr(section['type'])}")


def check_run_mode(mode, key="run_mode"):
    """Return ``mode`` if it is one of :data:`RUN_MODES`, else raise ConfigError naming ``key``."""
    if mode not in RUN_MODES:
        raise ConfigError(f"{key}: unknown mode {mode!r}; allowed: {', '.join(RUN_MODES)}")
    return mode


def check_call_args(section, cls, kwargs, skip=()):
    """Raise ConfigError if ``kwargs`` has keys that ``cls(...)`` does not accept."""
    params = inspect.signature(cls.__init__ if inspect.isclass(cls) else cls).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    allowed = [p for p in params if p not in ("self",) + tuple(skip)]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(f"{section}: unknown argument(s) {unknown} for {cls.__name__}; allowed: {allowed}")


def validate_run_config(config, default_arch=None):
    """Validate a run config (a MindFormerConfig) completely; return the parsed TrainingArguments.

    ``default_arch``: the registered model a ``model.model_config`` without ``model.arch.type`` builds."""
    _check_keys("run config", config, TOP_LEVEL_KEYS)
    check_section_types(config)
    for key, why in SHARDED_CHECKPOINT_KEYS.items():
        if config.get(key) not in (None, False, ""):
            raise ConfigError(f"{key}={config[key]!r}: {why}")
    if config.get("run_mode") is not None:
        check_run_mode(config["run_mode"])
    for section, allowed in SECTION_KEYS.items():
        if config.get(section) is not None:
            _check_keys(section, config[section], allowed)
    runner = dict(config.get("runner_config") or {})
    for key in ("seed", "output_dir"):
        if config.get(key) is not None:
            runner.setdefault(key, config[key])
    try:
        args = TrainingArguments.from_dict(runner)
    except ConfigError as e:
        raise ConfigError(f"runner_config: {e}") from e
    check_output_dir(args.output_dir)
    parallel_settings(config)
    check_recompute_config(config.get("recompute_config"))
    if config.get("model") is not None and config.model.get("model_config") is not None:
        arch = (config.model.get("arch") or {}).get("type", default_arch)
        model_cls = MindFormerRegister.get_cls(MindFormerModuleType.MODELS, arch)
        try:
            model_cls.config_class.from_dict(config.model.model_config.to_dict())
        except ConfigError as e:
            raise ConfigError(f"model.model_config: {e}") from e
    if config.get("processor") is not None:
        validate_processor_section(config.processor)
    for section in ("train_dataset", "eval_dataset"):
        if config.get(section) is not None:
            validate_dataset_section(section, config[section])
    for section, kind, default in (("optimizer", MindFormerModuleType.OPTIMIZER, DEFAULT_OPTIMIZER),
                                   ("lr_schedule", MindFormerModuleType.LR, DEFAULT_LR_SCHEDULE)):
        if config.get(section) is not None:   # the defaults build_optimizer / build_lr_schedule use
            cfg = dict(config[section])
            cls = MindFormerRegister.get_cls(kind, cfg.pop("type", None) or default)
            check_call_args(section, cls, cfg, skip=("params", "learning_rate") if section == "optimizer" else ())
            check_section_args(section, cls, cfg)
    return args


def check_output_dir(output_dir):
    """ConfigError if ``output_dir`` (or the nearest existing folder above it) is a file, not a directory."""
    path = Path(str(output_dir))
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise ConfigError(f"output_dir {output_dir}: {where}, not a directory; choose another output_dir "
                          f"(--output_dir)")


def validate_dataset_section(section, cfg):
    _check_keys(section, cfg, DATASET_KEYS)
    loader = cfg.get("data_loader")
    if not isinstance(loader, dict) or "type" not in loader:
        raise ConfigError(f"{section}.data_loader: expected a mapping with a 'type' "
                          f"(one of {MindFormerRegister.names(MindFormerModuleType.DATASET)}), got {loader!r}")
    cls = MindFormerRegister.get_cls(MindFormerModuleType.DATASET, loader["type"])
    kwargs = {k: v for k, v in loader.items() if k not in ("type", "dataset_dir")}
    check_call_args(f"{section}.data_loader", cls, kwargs)
    for key in PATH_KEYS:
        value = loader.get(key)
        if value not in (None, "") and not Path(str(value)).exists():
            raise ConfigError(f"{section}.data_loader.{key}: path does not exist: {value}")


def _typed_part(processor, key):
    """``(registered class or None, other keys)`` of ``processor.<key>`` (``image_processor``: ``processor.type``
    names its class too)."""
    processor = processor or {}
    cfg = processor.get(key) or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"processor.{key}: expected a mapping, got {cfg!r}")
    cfg = dict(cfg)
    name = cfg.pop("type", None)
    kind = MindFormerModuleType.TOKENIZER if key == "tokenizer" else MindFormerModuleType.PROCESSOR
    if name is None and key == "image_processor":
        name = processor.get("type")
    return (MindFormerRegister.get_cls(kind, name) if name is not None else None), cfg


def validate_processor_section(processor):
    """ConfigError for an unregistered ``processor.type`` / ``image_processor.type`` / ``tokenizer.type`` or an
    argument their class does not take."""
    image_cls, image_cfg = _typed_part(processor, "image_processor")
    if image_cls is not None:
        check_call_args("processor.image_processor", image_cls, image_cfg)
    tokenizer_cls, tokenizer_cfg = _typed_part(processor, "tokenizer")
    if tokenizer_cls is not None:
        check_call_args("processor.tokenizer", tokenizer_cls, tokenizer_cfg)


def build_image_processor(processor, model, name=None):
    """The image processor of the ``processor`` section for ``model``: the class ``image_processor.type`` (or
    ``processor.type``) names in the registry, default the model's ``image_processor_class``, built for the
    model's config and weights ``name`` (default: those it was loaded as) with the section's other keys over
    the catalog's preprocessing (:meth:`~mindram.models.image_processing_utils.BaseImageProcessor.for_config`)."""
    cls, cfg = _typed_part(processor, "image_processor")
    cls = cls or type(model).image_processor_class
    if cls is None:
        raise ConfigError(f"{type(model).__name__} declares no image_processor_class; "
                          f"set processor.image_processor.type")
    return cls.for_config(model.config, name=name, **cfg)


def build_tokenizer(processor, model):
    """The tokenizer of the ``processor`` section: ``tokenizer.type`` from the registry (default: the model's
    ``tokenizer_class``) built with the section's other keys; without a ``processor.tokenizer`` section the
    model's shared tokenizer (None for a model without a text tower)."""
    cls, cfg = _typed_part(processor, "tokenizer")
    if cls is None and not cfg:
        return model.tokenizer
    cls = cls or type(model).tokenizer_class
    if cls is None:
        raise ConfigError(f"{type(model).__name__} has no tokenizer_class; set processor.tokenizer.type")
    return cls(**cfg)


def build_source(cfg):
    """Build a record source from a ``data_loader`` mapping (``dataset_dir`` is the first argument)."""
    cfg = dict(cfg)
    cls = MindFormerRegister.get_cls(MindFormerModuleType.DATASET, cfg.pop("type"))
    dataset_dir = cfg.pop("dataset_dir", None)
    if dataset_dir in (None, ""):
        return cls(**cfg)
    return cls(dataset_dir, **cfg)


def load_run_config(args=None, overrides=None):
    """A run config from a YAML path, a mapping or a MindFormerConfig, with dotted ``overrides`` applied.

    A YAML path holding a PaddleClas RAM config (``Global`` + ``Arch`` sections) is translated first
    (:mod:`mindram.compat.paddleclas`; the keys it cannot honour are logged as warnings). The sections the
    trainer reads must be mappings, their ``type`` names (:func:`check_section_types`, after the overrides)."""
    if args is None:
        config = MindFormerConfig()
    elif isinstance(args, MindFormerConfig):
        config = MindFormerConfig(args.to_dict())
    elif isinstance(args, dict):
        config = MindFormerConfig(args)
    elif isinstance(args, (str, Path)):
        config = MindFormerConfig(str(args))
        if "Global" in config and "Arch" in config:  # a PaddleClas RAM YAML: translated, unhonoured keys logged
            from ..compat.paddleclas import load_translated  # pylint: disable=import-outside-toplevel
            config = MindFormerConfig(load_translated(args))
    else:
        raise ConfigError(f"args must be a YAML path, a mapping or a MindFormerConfig, got {type(args).__name__}")
    if overrides:
        config.merge_from_dict(overrides)
    check_section_types(config)
    return config

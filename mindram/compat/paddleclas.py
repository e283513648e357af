"""PaddleClas RAM / RAM++ YAML → mindram run config (docs/migrating.md#paddleclas-ram--ram-and-paddlemix).

    python -m mindram.compat.paddleclas ppcls/configs/ram/RAM_plus.yaml [-o run_ram_plus.yaml]

prints (or writes atomically to ``-o``) the mindram run config of a PaddleClas config with the sections
``Global``/``AMP``/``Arch``/``Loss``/``Optimizer``/``DataLoader``/``Infer``, then lists on stderr (and as
comments at the top of the YAML) every key that cannot be honoured, with why; none is dropped silently.
``run_mindformer.py --config`` and ``Trainer(args=...)`` accept such a YAML directly (detected by its
``Global`` + ``Arch`` sections; the list is logged as warnings).

What maps where (one function per section below; every leaf key of the input is either mapped or listed):
``Arch.name``/``vit``/``image_size`` → ``model`` (the catalog architecture ``<name>_<vit>_<size>``) with
``threshold``, ``delete_tag_index``, ``tag_list``, ``tag_list_chinese``, ``ram_class_threshold_path``
(PaddleClas' copies of recognize-anything's files → the package's own); ``clip_version`` → ``tagging.teacher``
(``vit-b-32-224`` → ``clip_vit_b_32``); ``Optimizer`` AdamW → ``optimizer`` AdamWeightDecay,
``layerwise_decay`` → ``tagging.layer_decay``, ``lr`` Cosine → ``lr_schedule`` CosineWithWarmUpLR with
``warmup_ratio = warmup_epoch / epochs``; ``DataLoader.*.dataset`` RAMPretrainDataset ``ann_file`` →
``RAMTaggingJson`` (``image_path`` relative to the working directory, as in PaddleClas); ``transform_ops_ram``
resize/normalise → ``processor.image_processor``; samplers → batch sizes, shuffling; ``Global`` →
``output_dir``, ``epochs``, ``logging_steps``, ``context.device_target``; ``Infer.PostProcess`` RamOutPut →
``tagging.output_format: paddleclas`` + ``language``.
"""
import argparse
import logging
import sys
from pathlib import Path

import yaml

from .. import catalog
from ..config import read_yaml
from ..errors import ConfigError
from ..models.ram.configuration import DATA_DIR, FAMILY, RAMConfig
from ..utils.cli import add_debug_flag, configure_logging, run_cli
from ..utils.io import atomic_write

logger = logging.getLogger(__name__)

PROG = "python -m mindram.compat.paddleclas"
SECTIONS = ("Global", "AMP", "Arch", "Loss", "Optimizer", "DataLoader", "Infer")
MODEL_NAMES = {"ram": "RAM", "ram_plus": "RAMPlus"}
DEVICES = {"gpu": "GPU", "cpu": "CPU", "npu": "Ascend", "ascend": "Ascend"}
CLIP_VERSIONS = {"vit-b-32-224": "clip_vit_b_32", "vit-b-16-224": "clip_vit_b_16", "vit-l-14-224": "clip_vit_l_14",
                 "vit-l-14-336": "clip_vit_l_14@336"}
MINDRAM_WEIGHTS = (".ckpt", ".safetensors")
NO_CAPTION = ("PaddleClas' RAM trains without the caption loss (RAMLoss = tag + dis + alignment); mindram's is "
              "tagging.caption_loss, not set by the translation (docs/ram.md#training)")


def is_paddleclas_config(data):
    """Whether a loaded YAML mapping is a PaddleClas config (it has ``Global`` and ``Arch`` sections)."""
    return isinstance(data, dict) and "Global" in data and "Arch" in data


def leaf_keys(data, prefix=""):
    """Dotted paths of every leaf of a nested mapping (lists of mappings are indexed: ``Loss.Train.0.RAMLoss``)."""
    if isinstance(data, dict) and data:
        return [k for key, value in data.items() for k in leaf_keys(value, f"{prefix}{key}.")]
    if isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        return [k for i, value in enumerate(data) for k in leaf_keys(value, f"{prefix}{i}.")]
    return [prefix[:-1]]


class Translation:
    """A translation in progress: the mindram ``config`` built so far, the input keys ``used`` (mapped or
    deliberately without effect) and the ``unhonoured`` ones with why."""

    def __init__(self, data):
        self.data = data
        self.config = {}
        self.used = set()
        self.unhonoured = {}

    def has(self, path):
        """Whether the input has a value at ``path`` (not marked used)."""
        missing = object()
        return self.get(path, missing, mark=False) is not missing

    def get(self, path, default=None, mark=True):
        """The input value at a dotted ``path`` (with everything under it marked used), or ``default``."""
        node = self.data
        for part in path.split("."):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                return default
        if mark:
            self.used.update(k for k in leaf_keys(node, f"{path}."))
        return node

    def put(self, path, value):
        """Set the mindram key ``path`` (dotted) to ``value``."""
        node = self.config
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    def refuse(self, path, why):
        """List input key ``path`` (or every leaf under it) as not honoured."""
        self.get(path)
        self.unhonoured[path] = why

    def leftovers(self):
        """Input keys neither mapped nor listed: listed as unknown (never dropped silently)."""
        for key in leaf_keys(self.data):
            if key not in self.used and not any(key.startswith(f"{u}.") for u in self.unhonoured):
                self.unhonoured[key] = "unknown key: no mindram equivalent"


def _package_file(value, key, t):
    """A PaddleClas tag/threshold file: a path that exists, else the package's copy of the same name."""
    if value in (None, ""):
        return None
    if Path(str(value)).expanduser().exists():
        return str(Path(str(value)).expanduser().resolve())
    name = Path(str(value)).name
    if (DATA_DIR / name).is_file():
        return name
    t.refuse(key, f"{value} does not exist and is not one of mindram's RAM tag files; the default is used")
    return None


def _arch(t):
    name, vit, size = t.get("Arch.name", "ram"), t.get("Arch.vit", "swin_l"), t.get("Arch.image_size", 384)
    if name not in MODEL_NAMES:
        raise ConfigError(f"Arch.name: expected one of {sorted(MODEL_NAMES)} (PaddleClas RAM / RAM++), got {name!r}")
    arch = f"{name}_{vit}_{size}"
    if arch not in catalog.architectures(FAMILY):
        raise ConfigError(f"Arch.vit={vit!r}, image_size={size}: no such RAM architecture; known: "
                          f"{catalog.architectures(FAMILY)}")
    model_config = RAMConfig.from_yaml(catalog.arch_file(FAMILY, arch)).to_dict()
    for key, target in (("threshold", "threshold"), ("delete_tag_index", "delete_tag_index")):
        value = t.get(f"Arch.{key}")
        if value is not None:
            model_config[target] = list(value) if key == "delete_tag_index" else float(value)
    for key, target in (("tag_list", "tag_list"), ("tag_list_chinese", "tag_list_chinese"),
                        ("ram_class_threshold_path", "threshold_file")):
        path = _package_file(t.get(f"Arch.{key}"), f"Arch.{key}", t)
        if path is not None:
            model_config[target] = path
    model_config.pop("checkpoint_name_or_path", None)
    t.put("model", {"arch": {"type": MODEL_NAMES[name]}, "model_config": model_config})
    t.put("trainer", {"type": "ImageTaggingTrainer", "model_name": arch})
    if t.get("Arch.vit_grad_ckpt", False) or t.get("Arch.vit_ckpt_layer", 0):
        t.refuse("Arch.vit_grad_ckpt", "gradient checkpointing of the Swin encoder is not available (memory only)")
        t.refuse("Arch.vit_ckpt_layer", "gradient checkpointing of the Swin encoder is not available (memory only)")
    for key in ("prompt", "med_config"):
        if t.get(f"Arch.{key}") is not None:
            t.refuse(f"Arch.{key}", NO_CAPTION)
    if t.get("Arch.q2l_config") is not None:
        t.refuse("Arch.q2l_config", "the tagging head is the reference's q2l_config.json of the architecture")
    t.get("Arch.stage")  # train/eval: mindram's --run_mode decides
    _teacher(t)
    return arch, model_config


def _teacher(t):
    version = t.get("Arch.clip_version", "vit-b-32-224")
    teacher = CLIP_VERSIONS.get(str(version).lower())
    if teacher is None:
        t.refuse("Arch.clip_version", f"{version!r} is not one of {sorted(CLIP_VERSIONS)}; tagging.teacher kept at "
                                      f"clip_vit_b_16")
        teacher = "clip_vit_b_16"
    weights = t.get("Arch.clip_pretraind")
    if weights:
        path = Path(str(weights)).expanduser()
        if path.suffix in MINDRAM_WEIGHTS or path.is_dir():
            teacher = str(path)
        else:
            t.refuse("Arch.clip_pretraind", f"{weights} is not a MindSpore checkpoint: convert it (python "
                                            f"convert_weights/convert_clip.py --torch_path {weights} --mindspore_path "
                                            f"{path.with_suffix('.safetensors')}) and set tagging.teacher to it; "
                                            f"the catalog weights {teacher} are used")
    t.put("tagging.teacher", teacher)


def _global(t):
    for key, target in (("output_dir", "output_dir"), ("seed", "seed")):
        if t.get(f"Global.{key}") is not None:
            t.put(target, t.get(f"Global.{key}"))
    for key, target in (("epochs", "runner_config.epochs"), ("print_batch_step", "runner_config.logging_steps")):
        if t.get(f"Global.{key}") is not None:
            t.put(target, int(t.get(f"Global.{key}")))
    device = t.get("Global.device")
    if device is not None:
        if str(device).lower() not in DEVICES:
            t.refuse("Global.device", f"{device!r} is not one of {sorted(DEVICES)}; the default CPU is used")
        else:
            t.put("context.device_target", DEVICES[str(device).lower()])
    weights = t.get("Global.pretrained_model")
    if weights:
        if Path(str(weights)).suffix in MINDRAM_WEIGHTS or not str(weights).endswith(".pdparams"):
            t.put("load_checkpoint", str(weights))
        else:
            t.refuse("Global.pretrained_model", f"{weights} holds Paddle RAM weights; convert recognize-anything's "
                                                f".pth with convert_weights/convert_ram.py and set load_checkpoint (or "
                                                f"load_checkpoint: <the catalog name>); the model starts from random "
                                                f"weights")
    if t.get("Global.checkpoints"):
        t.refuse("Global.checkpoints", "resuming a Paddle checkpoint is not possible; mindram resumes its own "
                                       "(--resume_training latest)")
    if t.get("Global.save_interval", 1) != 1:
        t.refuse("Global.save_interval", "checkpoints are saved each epoch (or runner_config.save_steps steps)")
    if t.get("Global.eval_during_train", False):
        t.refuse("Global.eval_during_train", "run_mindformer.py evaluates once, after training")
        t.refuse("Global.eval_interval", "run_mindformer.py evaluates once, after training")
    t.get("Global.eval_interval")
    if t.get("Global.use_visualdl", False):
        t.refuse("Global.use_visualdl", "VisualDL is not supported; see train_log.jsonl")
    shape = t.get("Global.image_shape")
    size = t.get("Arch.image_size", 384)
    if shape is not None and list(shape) != [3, size, size]:
        t.refuse("Global.image_shape", f"{shape} differs from Arch.image_size {size}; the architecture's is used")
    if t.get("Global.save_inference_dir") is not None:
        t.refuse("Global.save_inference_dir", "static-graph export is not part of the run config")


def _amp(t):
    if t.get("AMP") is not None and t.get("AMP.use_amp", False):
        t.refuse("AMP", "RAM / RAM++ train in float32 in mindram (no mixed precision for the tagging task)")


def _loss(t):
    for i, item in enumerate(t.get("Loss.Train") or []):
        name, args = next(iter(item.items())) if isinstance(item, dict) and len(item) == 1 else (None, None)
        if name != "RAMLoss" or (args or {}).get("weight", 1.0) != 1.0:
            t.refuse(f"Loss.Train.{i}", "only RAMLoss with weight 1.0 (the reference's tag + distillation + "
                                        "alignment losses) maps to the image_tagging task's losses")
    if t.get("Loss.Eval") is not None:
        t.refuse("Loss.Eval", "evaluation reports mAP / CP / CR / CF1, not a loss")


def _optimizer(t):
    name = t.get("Optimizer.name", "AdamW")
    if name != "AdamW":
        t.refuse("Optimizer.name", f"{name!r}: only AdamW maps (optimizer.type AdamWeightDecay)")
    optimizer = {"type": "AdamWeightDecay"}
    for key, target in (("beta1", "beta1"), ("beta2", "beta2"), ("epsilon", "eps"), ("weight_decay", "weight_decay")):
        if t.get(f"Optimizer.{key}") is not None:
            optimizer[target] = float(t.get(f"Optimizer.{key}"))
    t.put("optimizer", optimizer)
    if t.get("Optimizer.layerwise_decay") is not None:
        t.put("tagging.layer_decay", float(t.get("Optimizer.layerwise_decay")))
    if t.get("Optimizer.filter_bias_and_bn", True) is False:
        t.refuse("Optimizer.filter_bias_and_bn", "norms, biases and 1-D tensors are never decayed in mindram")
    _lr(t)


def _lr(t):
    name = t.get("Optimizer.lr.name", "Cosine")
    if name != "Cosine":
        t.refuse("Optimizer.lr.name", f"{name!r}: only Cosine maps (lr_schedule CosineWithWarmUpLR)")
    schedule = {"type": "CosineWithWarmUpLR", "learning_rate": float(t.get("Optimizer.lr.learning_rate", 0.0004)),
                "min_lr": float(t.get("Optimizer.lr.eta_min", 0.0))}
    warmup, epochs = t.get("Optimizer.lr.warmup_epoch", 0), t.get("Global.epochs", 1)
    if warmup:
        if warmup > epochs:
            raise ConfigError(f"Optimizer.lr.warmup_epoch {warmup} exceeds Global.epochs {epochs}")
        schedule["warmup_ratio"] = warmup / epochs
    if t.get("Optimizer.lr.warmup_start_lr", 0.0):
        t.refuse("Optimizer.lr.warmup_start_lr", "approximated: the warmup rises linearly from learning_rate / "
                                                 "warmup_steps")
    t.put("lr_schedule", schedule)


def _transforms(t, section, size):
    """``processor.image_processor`` arguments from ``transform_ops_ram``; other ops listed."""
    processor = {}
    for i, op in enumerate(t.get(f"{section}.transform_ops_ram") or []):
        name, args = next(iter(op.items())) if isinstance(op, dict) and len(op) == 1 else (str(op), None)
        args, key = args or {}, f"{section}.transform_ops_ram.{i}"
        if name == "ResizeImage" and args.get("size") in (size, [size, size]):
            processor["interpolation"] = args.get("interpolation", "bilinear")
        elif name == "NormalizeImage" and str(args.get("scale", "1.0/255.0")).replace(" ", "") in (
                "1.0/255.0", "1/255", "0.00392156862745098") and args.get("order", "") in ("", "chw", "hwc"):
            processor.update({k: [float(v) for v in args[k]] for k in ("mean", "std") if k in args})
        elif name != "ToCHWImage":
            t.refuse(key, f"{name} {args or ''}: the RAM preprocessing is a resize to {size}x{size} + normalise; "
                          f"runner_config.train_transform adds RandomResizedCrop + flip")
    if t.get(f"{section}.transform_ops_clip") is not None:
        t.refuse(f"{section}.transform_ops_clip", "approximated: the teacher uses its own preprocessing (shortest-"
                                                  "side resize + centre crop, OpenAI mean/std)")
    return processor


def _data(t, model_config):
    size = model_config["image_size"]
    processors = []
    for phase, section in (("Train", "train_dataset"), ("Eval", "eval_dataset")):
        prefix = f"DataLoader.{phase}"
        if not t.has(prefix):
            continue
        name = t.get(f"{prefix}.dataset.name")
        files = t.get(f"{prefix}.dataset.ann_file") or []
        files = [files] if isinstance(files, str) else list(files)
        if name != "RAMPretrainDataset" or not files:
            t.refuse(f"{prefix}.dataset", f"{name!r}: only RAMPretrainDataset with an ann_file maps (RAMTaggingJson)")
            continue
        if len(files) > 1:
            t.refuse(f"{prefix}.dataset.ann_file", f"RAMTaggingJson reads one json: {files[0]} is used; concatenate "
                                                   f"the lists of {files} into one file to train on all of them")
        loader = {"type": "RAMTaggingJson", "dataset_dir": ".", "annotation_file": str(files[0]),
                  "num_tags": model_config["num_tags"]}
        t.put(section, {"data_loader": loader})
        processors.append(_transforms(t, f"{prefix}.dataset", size))
        batch = t.get(f"{prefix}.sampler.batch_size")
        if batch is not None:
            t.put("runner_config.batch_size" if phase == "Train" else "runner_config.eval_batch_size", int(batch))
        shuffle = t.get(f"{prefix}.sampler.shuffle")
        if phase == "Train" and shuffle is not None:
            t.put(f"{section}.shuffle", bool(shuffle))
        elif shuffle:
            t.refuse(f"{prefix}.sampler.shuffle", "evaluation reads in order (the metrics do not depend on it)")
        if phase == "Train" and not t.get(f"{prefix}.sampler.drop_last", True):
            t.refuse(f"{prefix}.sampler.drop_last", "training drops the last partial batch (full batches only)")
        t.get(f"{prefix}.sampler.drop_last")
        t.get(f"{prefix}.sampler.name")  # DistributedBatchSampler: mindram shards by rank under use_parallel
        if t.get(f"{prefix}.loader.num_workers") is not None:
            t.put(f"{section}.num_workers", int(t.get(f"{prefix}.loader.num_workers")))
        t.get(f"{prefix}.loader.use_shared_memory")  # a loader detail without effect on the batches
    if processors:
        if any(p != processors[0] for p in processors[1:]):
            t.refuse("DataLoader.Eval.dataset.transform_ops_ram", "one preprocessing serves training and evaluation: "
                                                                  "Train's is used")
        if processors[0]:
            t.put("processor", {"image_processor": {"type": "RAMImageProcessor", **processors[0]}})
    t.put("runner_config.train_transform", False)  # PaddleClas' RAM configs resize only (no crop, no flip)


def _infer(t):
    if t.get("Infer.infer_imgs") is not None:
        t.refuse("Infer.infer_imgs", f"pass it on the command line: --run_mode predict --predict_data "
                                     f"{t.get('Infer.infer_imgs')}")
    if t.get("Infer.batch_size") is not None:
        t.refuse("Infer.batch_size", "prediction batches are internal")
    if t.get("Infer.transforms") is not None:
        t.refuse("Infer.transforms", "prediction uses the model's preprocessing (resize to SxS, as recognize-"
                                     "anything), not PaddleClas' resize_short + crop")
    if not t.has("Infer.PostProcess"):
        return
    name = t.get("Infer.PostProcess.name")
    if name != "RamOutPut":
        t.refuse("Infer.PostProcess", f"{name!r}: only RamOutPut maps (tagging.output_format paddleclas)")
        return
    t.put("tagging.output_format", "paddleclas")
    t.put("tagging.language", t.get("Infer.PostProcess.language", "cn"))
    for key in ("tag_list", "tag_list_chinese", "ram_class_threshold_path"):
        value = t.get(f"Infer.PostProcess.{key}")
        if value is not None and Path(str(value)).name != Path(str(t.get(f"Arch.{key}", value))).name:
            t.refuse(f"Infer.PostProcess.{key}", f"differs from Arch.{key}; the model's files are used")
    threshold = t.get("Infer.PostProcess.threshold")
    if threshold is not None and threshold != t.get("Arch.threshold", 0.68):
        t.refuse("Infer.PostProcess.threshold", "differs from Arch.threshold; the model's thresholds are used")
    delete = t.get("Infer.PostProcess.delete_tag_index")
    if delete is not None and list(delete) != list(t.get("Arch.delete_tag_index", [])):
        t.refuse("Infer.PostProcess.delete_tag_index", "differs from Arch.delete_tag_index; the model's is used")


def translate(data, source="config"):
    """``(mindram run config dict, {input key: why it is not honoured})`` of a PaddleClas RAM config mapping."""
    if not is_paddleclas_config(data):
        raise ConfigError(f"{source}: not a PaddleClas config (expected the sections Global and Arch)")
    t = Translation(data)
    unknown = sorted(set(data) - set(SECTIONS))
    for key in unknown:
        t.refuse(key, f"unknown section; known: {list(SECTIONS)}")
    _global(t)
    _amp(t)
    _, model_config = _arch(t)
    _loss(t)
    _optimizer(t)
    _data(t, model_config)
    _infer(t)
    t.leftovers()
    return t.config, dict(sorted(t.unhonoured.items()))


def translate_file(path):
    """:func:`translate` of a PaddleClas YAML file."""
    return translate(read_yaml(path), source=str(path))


def to_yaml(config, unhonoured, source):
    """The translated config as YAML text, the unhonoured keys as comments at the top."""
    lines = [f"# mindram run config translated from the PaddleClas config {source}",
             f"# ({PROG}; docs/migrating.md). Keys not honoured:"]
    lines += [f"#   {key}: {why}" for key, why in unhonoured.items()] or ["#   none"]
    body = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=None, width=110)
    return "\n".join(lines) + "\n" + body


def load_translated(path):
    """The mindram run config dict of a PaddleClas YAML, its unhonoured keys logged as warnings."""
    config, unhonoured = translate_file(path)
    for key, why in unhonoured.items():
        logger.warning("%s: %s not honoured: %s", path, key, why)
    return config


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description="Translate a PaddleClas RAM / RAM++ YAML into a mindram "
                                                            "run config (printed, or written with -o)")
    parser.add_argument("config", help="PaddleClas YAML (Global, Arch, Loss, Optimizer, DataLoader, Infer)")
    parser.add_argument("-o", "--output", default=None, help="write the translated YAML here (atomically)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    config, unhonoured = translate_file(args.config)
    text = to_yaml(config, unhonoured, args.config)
    if args.output:
        with atomic_write(args.output) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    for key, why in unhonoured.items():
        print(f"not honoured: {key}: {why}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    configure_logging()
    sys.exit(run_cli(main, prog=PROG))

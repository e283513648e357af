"""recognize-anything's inference API over mindram's RAM / RAM++ (docs/migrating.md#recognize-anything).

    from mindram.compat.recognize_anything import ram_plus, get_transform, inference_ram as inference
    transform = get_transform(image_size=384)
    model = ram_plus(pretrained="pretrained/ram_plus_swin_large_14m.pth", image_size=384, vit="swin_l")
    model.eval()
    image = transform(Image.open("demo.jpg")).unsqueeze(0)
    tags, tags_chinese = inference(image, model)     # 'black | car | cat | ...', '黑色 | 车 | 猫 | ...'

A thin layer: :func:`ram` / :func:`ram_plus` return a :class:`RecognizeAnythingModel` around a mindram
:class:`~mindram.RAM` / :class:`~mindram.RAMPlus` (``.model``), :func:`get_transform` is
:class:`~mindram.RAMImageProcessor`, the open-set embeddings come from :mod:`mindram.models.ram.openset`, and
tags are chosen by the model's own ``generate_tag``. ``pretrained`` is the reference ``.pth`` (read by the
torch-free restricted unpickler and converted in memory; the architecture from ``<stem>.yaml`` beside it, else
from the shapes), a converted ``.safetensors``/``.ckpt``/directory, or a catalog name (``ram_plus_swin_l_384``).

The open-set recipe of ``inference_ram_plus_openset.py`` (assigning ``tag_list``, ``label_embed``,
``num_class`` and ``class_threshold``) is applied as one :class:`~mindram.models.ram.tags.Vocabulary` when the
model next tags; an inconsistent set of assignments is a ``ConfigError`` that points to
``model.set_open_set_tags``. Devices (``torch.device``, ``.to(device)``, ``.cuda()``) are accepted and left to
MindSpore's context. :data:`nn` holds ``Parameter`` (MindSpore's), for ``nn.Parameter(embedding.float())``.
"""
import logging
import types
from pathlib import Path

import numpy as np
from mindspore import Parameter, Tensor

from ..errors import ConfigError, DataError
from ..models.ram import RAM, RAMConfig, RAMImageProcessor, RAMPlus
from ..models.ram import openset
from ..models.ram.tags import Vocabulary, resolve_thresholds
from ..utils.random import no_init_weights

logger = logging.getLogger(__name__)

__all__ = ["ram", "ram_plus", "get_transform", "inference_ram", "inference_ram_openset",
           "build_openset_label_embedding", "build_openset_llm_label_embedding", "RecognizeAnythingModel",
           "ImageTensor", "nn"]

# ``from torch import nn`` → ``from mindram.compat.recognize_anything import nn``: what the reference scripts use
nn = types.SimpleNamespace(Parameter=Parameter)

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
DEVICE_TYPES = ("cpu", "cuda", "gpu", "npu", "ascend", "mps", "xpu")
OPEN_SET_ATTRIBUTES = ("tag_list", "tag_list_chinese", "label_embed", "num_class", "class_threshold")
VOCABULARY_SETTERS = ("set_open_set_tags", "clear_open_set_tags", "open_set_tags", "use_vocabulary")
# reference keyword arguments that change nothing in mindram's inference: (default, why)
NO_EFFECT = {"med_config": (None, "RAM's caption modules are not built for tagging"),
             "text_encoder_type": ("bert-base-uncased", "the BERT tokenizer only serves RAM's captioning"),
             "vit_grad_ckpt": (False, "gradient checkpointing only saves training memory"),
             "vit_ckpt_layer": (0, "gradient checkpointing only saves training memory")}
CONFIG_KEYWORDS = ("threshold", "delete_tag_index", "tag_list", "tag_list_chinese")
OPEN_SET_HINT = "or call model.set_open_set_tags(names, descriptions, threshold=0.5) (mindram's open-set API)"


def _is_device(arg):
    """A torch/MindSpore device spelling: ``torch.device``, ``'cuda:0'``, ``'cpu'``, a device index."""
    if type(arg).__name__ == "device":
        return True
    if isinstance(arg, int) and not isinstance(arg, bool):
        return True
    return isinstance(arg, str) and arg.split(":")[0].lower() in DEVICE_TYPES


def _check_devices(owner, args, kwargs):
    """``.to(...)`` arguments must be devices (MindSpore's context decides where things run)."""
    values = list(args) + [v for k, v in kwargs.items() if k in ("device",)]
    others = sorted(set(kwargs) - {"device", "non_blocking", "copy"})
    bad = [v for v in values if not _is_device(v)]
    if bad or others:
        raise TypeError(f"{owner}.to(): only a device is accepted (MindSpore's context places the work), got "
                        f"{bad + others!r}; cast with numpy / mindspore instead")


class DevicePlacement:
    """torch's ``to(device)`` / ``cuda()`` / ``cpu()``: accepted, and left to MindSpore's context (no-ops)."""

    def to(self, *args, **kwargs):
        _check_devices(type(self).__name__, args, kwargs)
        return self

    def cuda(self, *args, **kwargs):
        return self

    def cpu(self):
        return self


class ImageTensor(DevicePlacement, np.ndarray):
    """A float32 image array with the torch methods recognize-anything scripts call on a transformed image:
    ``unsqueeze(dim)``, ``to(device)`` / ``cuda()`` / ``cpu()`` (no-ops), ``float()``, ``numpy()``."""

    def unsqueeze(self, dim):
        return np.expand_dims(self, dim)

    def float(self):
        return self.astype(np.float32)

    def numpy(self):
        return np.asarray(self)


def _to_numpy(value, name):
    """An array from a MindSpore Tensor/Parameter, a torch tensor, or anything numpy reads."""
    if hasattr(value, "asnumpy"):
        return value.asnumpy()
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch, without importing it
        return value.detach().cpu().float().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name}: expected an array or tensor, got {type(value).__name__}") from e


def _pixels(image):
    """(N, 3, S, S) float32 numpy from what a script passes to ``inference_ram``."""
    pixels = np.asarray(_to_numpy(image, "image"), dtype=np.float32)
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        hint = "; add a batch dimension: transform(img).unsqueeze(0)" if pixels.ndim == 3 else ""
        raise DataError(f"image: expected a (N, 3, S, S) batch, got shape {pixels.shape}{hint}")
    return pixels


class RAMTransform:
    """``get_transform(image_size)``: an image (PIL, path, array) → (3, S, S) :class:`ImageTensor`."""

    def __init__(self, image_size=384):
        self.processor = RAMImageProcessor(image_size=image_size)

    def __call__(self, image):
        return np.ascontiguousarray(self.processor.preprocess(image), np.float32).view(ImageTensor)

    def __repr__(self):
        return f"RAMTransform(image_size={self.processor.image_size})"


def get_transform(image_size=384):
    """recognize-anything ``ram.get_transform``: RGB → resize to S×S (bilinear) → /255 → ImageNet mean/std."""
    return RAMTransform(image_size)


class RecognizeAnythingModel(DevicePlacement):
    """A mindram RAM / RAM++ (``.model``) with the reference model's inference surface: ``generate_tag``,
    ``generate_tag_openset``, ``eval``/``train``/``to``/``cuda``/``cpu`` and the open-set attributes
    ``tag_list``, ``tag_list_chinese``, ``label_embed``, ``num_class``, ``class_threshold`` (read and assigned).
    Anything else is the mindram model's (``set_open_set_tags``, ``vocabulary``, ``get_tag_scores``, ...)."""

    def __init__(self, model):
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "_assigned", {})

    # ---- reference attributes ----
    def __getattr__(self, name):
        if name.startswith("__") or "_assigned" not in self.__dict__:  # copy/pickle probes, half-built objects
            raise AttributeError(name)
        assigned = self.__dict__["_assigned"]
        if name in assigned:
            return assigned[name]
        model = self.__dict__["model"]
        if name == "num_class":
            return len(model.tag_list)
        if name in ("tag_list", "tag_list_chinese"):
            return np.array(getattr(model, name))
        if name == "label_embed":
            embed = model.label_embed if model.open_set_label_embed is None else model.open_set_label_embed
            return Tensor(embed.asnumpy().reshape(-1, embed.shape[-1]))  # the reference's (K·D, E) rows
        if name in OPEN_SET_ATTRIBUTES:  # class_threshold: the model's array (in-place edits take effect)
            return getattr(model, name)
        if name in VOCABULARY_SETTERS:
            assigned.clear()  # the mindram call replaces the vocabulary: pending assignments are dropped
        else:
            self._sync()
        return getattr(model, name)

    def __setattr__(self, name, value):
        if name in OPEN_SET_ATTRIBUTES:
            self._assigned[name] = value
        elif name == "delete_tag_index":
            self.model.delete_tag_index = [int(i) for i in value]
        else:
            setattr(self.model, name, value)

    def _sync(self):
        """Install the assigned open-set attributes as one vocabulary (module docstring)."""
        assigned = self._assigned
        if not assigned:
            return
        model, current = self.model, self.model.vocabulary()
        names = [str(n) for n in assigned["tag_list"]] if "tag_list" in assigned else list(current.names)
        count = int(assigned["num_class"]) if "num_class" in assigned else len(names)
        if len(names) != count:
            raise ConfigError(f"model.tag_list has {len(names)} names but model.num_class is {count}; assign "
                              f"both consistently, {OPEN_SET_HINT}")
        if "tag_list_chinese" in assigned:
            names_cn = [str(n) for n in assigned["tag_list_chinese"]]
        else:
            names_cn = names if "tag_list" in assigned else list(current.names_chinese)
        if len(names_cn) != count:
            raise ConfigError(f"model.tag_list_chinese has {len(names_cn)} names for {count} tags; {OPEN_SET_HINT}")
        changed = count != len(current.names)
        if "label_embed" in assigned:
            embed = Tensor(self._label_embed(assigned["label_embed"], count))
        elif changed:
            raise ConfigError(f"{count} tags but no label embeddings for them: assign model.label_embed (e.g. from "
                              f"build_openset_llm_label_embedding) {OPEN_SET_HINT}")
        else:
            embed = current.label_embed
        if "class_threshold" in assigned:
            thresholds = resolve_thresholds(_to_numpy(assigned["class_threshold"], "model.class_threshold")
                                            .astype(np.float32).reshape(-1), None, count)
        elif changed:
            raise ConfigError(f"{count} tags but no thresholds for them: assign model.class_threshold (the reference "
                              f"recipe: torch.ones(model.num_class) * 0.5) {OPEN_SET_HINT}")
        else:
            thresholds = current.thresholds
        closed = "label_embed" not in assigned
        model.use_vocabulary(Vocabulary(names, names_cn, np.asarray(thresholds, np.float32), embed,
                                        current.delete_tag_index if closed else ()))
        assigned.clear()

    def _label_embed(self, value, count):
        """Assigned ``label_embed`` rows → mindram's (K, D, E) (RAM++) or (K, E) (RAM) float32 array."""
        rows = np.asarray(_to_numpy(value, "model.label_embed"), np.float32)
        config = self.model.config
        width = config.label_embed_dim
        if rows.ndim != 2 or rows.shape[1] != width:
            raise ConfigError(f"model.label_embed: expected ({count}·D, {width}) rows (CLIP text embeddings of the "
                              f"model's width), got shape {rows.shape}; {OPEN_SET_HINT}")
        if config.model_type == "ram":
            if rows.shape[0] != count:
                raise ConfigError(f"model.label_embed: RAM needs one row per tag ({count}), got {rows.shape[0]}; "
                                  f"{OPEN_SET_HINT}")
            return rows
        if rows.shape[0] % count:
            raise ConfigError(f"model.label_embed: {rows.shape[0]} rows are not D descriptions for each of "
                              f"{count} tags (model.num_class); {OPEN_SET_HINT}")
        return rows.reshape(count, rows.shape[0] // count, width)

    # ---- torch-style module methods ----
    def eval(self):
        self.model.set_train(False)
        return self

    def train(self, mode=True):
        self.model.set_train(bool(mode))
        return self

    # ---- tagging ----
    def generate_tag(self, image, threshold=None):
        """(English, Chinese) ' | '-joined tags per image. ``threshold``: the reference ignores it; here a value
        replaces the per-tag thresholds (None, the default, keeps them)."""
        self._sync()
        return self.model.generate_tag(_pixels(image), threshold=threshold)

    def generate_tag_openset(self, image, threshold=None):
        """English ' | '-joined tags per image (the reference's open-set output has no Chinese names)."""
        return self.generate_tag(image, threshold)[0]

    def __repr__(self):
        return f"RecognizeAnythingModel({type(self.model).__name__}, {len(self.model.tag_list)} tags)"


def _check_reference_keywords(kwargs):
    """Warn about reference keywords that have no effect here; refuse the training stage."""
    stage = kwargs.pop("stage", "eval")
    if stage != "eval":
        raise ConfigError(f"stage={stage!r}: ram()/ram_plus() build models for inference here; train with "
                          f"run_mindformer.py --config configs/ram/run_ram_plus_swin_l_384_finetune.yaml")
    for key, (default, why) in NO_EFFECT.items():
        value = kwargs.pop(key, default)
        if value != default:
            logger.warning("%s=%r has no effect in mindram: %s", key, value, why)
    unknown = sorted(set(kwargs) - set(CONFIG_KEYWORDS))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {unknown}; accepted: image_size, vit, "
                        f"{', '.join(CONFIG_KEYWORDS)}, stage, {', '.join(NO_EFFECT)}")
    return {k: list(v) if k == "delete_tag_index" else v for k, v in kwargs.items()}


def _torch_checkpoint(cls, path, image_size, vit, overrides):
    """A reference ``.pth`` converted in memory (nothing in it is executed)."""
    from ..checkpoint import load_torch_state_dict
    from ..models.ram.convert import config_from_state_dict, convert_state_dict
    source = load_torch_state_dict(path)
    sidecar = path.with_suffix(".yaml")
    config = RAMConfig.from_yaml(sidecar) if sidecar.is_file() else config_from_state_dict(source, source=str(path))
    if config.model_type != cls.model_type:
        other = "ram_plus" if config.model_type == "ram_plus" else "ram"
        raise ConfigError(f"{path}: these are {config.model_type} weights; load them with {other}(...)")
    if config.image_size != image_size or (config.vision_config is None and config.vit != vit):
        raise ConfigError(f"{path}: the weights are vit={config.vit!r} at image_size={config.image_size}, not "
                          f"vit={vit!r}, image_size={image_size}")
    params, _ = convert_state_dict(source, config)
    with no_init_weights():   # loaded strictly next
        model = cls(config.replace(**overrides) if overrides else config)
    model.load_weights(params)
    return model


def _build(cls, pretrained, image_size, vit, kwargs):
    overrides = _check_reference_keywords(dict(kwargs))
    if vit not in ("swin_l", "swin_b"):
        raise ConfigError(f"vit={vit!r}: mindram's RAM / RAM++ use a Swin encoder, vit must be 'swin_l' or 'swin_b'")
    if not pretrained:
        config = RAMConfig.from_pretrained(f"{cls.model_type}_{vit}_{image_size}")
        logger.warning("%s: no pretrained weights given, the model is randomly initialised", cls.model_type)
        model = cls(config.replace(**overrides) if overrides else config)
    else:
        path = Path(str(pretrained)).expanduser()
        if path.suffix in TORCH_SUFFIXES:
            if not path.is_file():
                raise FileNotFoundError(f"pretrained weights not found: {path}")
            model = _torch_checkpoint(cls, path, image_size, vit, overrides)
        else:
            model = cls.from_pretrained(str(pretrained), **overrides)
            if model.config.image_size != image_size:
                raise ConfigError(f"{pretrained}: the model takes image_size={model.config.image_size}, "
                                  f"not {image_size}")
    model.set_train(False)
    return RecognizeAnythingModel(model)


def ram(pretrained="", image_size=384, vit="swin_l", **kwargs):
    """recognize-anything ``ram.models.ram``: RAM (Swin-L/B) with ``pretrained`` weights (module docstring)."""
    return _build(RAM, pretrained, image_size, vit, kwargs)


def ram_plus(pretrained="", image_size=384, vit="swin_l", **kwargs):
    """recognize-anything ``ram.models.ram_plus``: RAM++ (Swin-L/B) with ``pretrained`` weights."""
    return _build(RAMPlus, pretrained, image_size, vit, kwargs)


def inference_ram(image, model):
    """recognize-anything ``ram.inference_ram``: (English, Chinese) ' | '-joined tags of the first image."""
    tags, tags_chinese = model.generate_tag(_pixels(image))
    return tags[0], tags_chinese[0]


def inference_ram_openset(image, model):
    """recognize-anything ``ram.inference_ram_openset``: the English tags of the first image."""
    if hasattr(model, "generate_tag_openset"):
        return model.generate_tag_openset(_pixels(image))[0]
    return model.generate_tag(_pixels(image))[0][0]


def build_openset_llm_label_embedding(llm_tag_des, clip_model=openset.DEFAULT_CLIP):
    """recognize-anything ``ram.utils.build_openset_llm_label_embedding``: ``[{tag: [descriptions]}, ...]`` →
    ``(embeddings (K·D, E) Tensor, tags)``, every description encoded by CLIP (default ``clip_vit_b_16``, the
    reference's ViT-B/16) and L2-normalised; each tag needs the same number D of descriptions (RAM++'s rule)."""
    if not isinstance(llm_tag_des, list) or not all(isinstance(i, dict) and len(i) == 1 for i in llm_tag_des):
        raise DataError("llm_tag_des: expected the reference's JSON list of one-key objects "
                        "[{tag: [descriptions, ...]}, ...]")
    categories = [next(iter(item)) for item in llm_tag_des]
    embed = openset.build_label_embed("ram_plus", categories, llm_tag_des, clip_model)
    return Tensor(np.ascontiguousarray(embed.reshape(-1, embed.shape[-1]), np.float32)), categories


def build_openset_label_embedding(categories=None, clip_model=openset.DEFAULT_CLIP):
    """recognize-anything ``ram.utils.build_openset_label_embedding`` (RAM): ``(embeddings (K, E) Tensor, tags)``
    from the 63 prompt templates per tag. ``categories`` is required here (the reference's default, its 200
    OpenImages-rare names, is not shipped with mindram)."""
    if categories is None:
        raise DataError("build_openset_label_embedding: pass categories=[...] (the reference's default list of "
                        "OpenImages-rare tags is not shipped with mindram)")
    categories = list(categories)
    embed = openset.build_label_embed("ram", categories, None, clip_model)
    return Tensor(np.ascontiguousarray(embed, np.float32)), categories

"""Pipeline base class: ``_sanitize_parameters`` → ``preprocess`` → ``_forward`` → ``postprocess``.

A pipeline is built once (model, image processor, tokenizer, default options) and called on one input or
a list; it splits lists into batches of ``batch_size`` itself. Options given at construction are defaults
that every call may override (``clf(img, top_k=1)``). Graph compilation is per batch shape, so batches are
padded (see :func:`mindram.models.clip.zero_shot.encode_in_batches`).

Bad inputs: in a list, an image that cannot be read is skipped and reported (a warning naming its index
and path) and its result is ``None``; a single bad input raises (``DataError``, ``FileNotFoundError`` or
``TypeError`` from :class:`~mindram.CLIPImageProcessor`).
"""
import abc
import logging
import os

import numpy as np

from .. import catalog
from ..errors import ConfigError, DataError
from ..models.clip import CLIPImageProcessor, CLIPModel
from ..utils.validation import check_batch_size

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "clip_vit_b_32"
ITEM_ERRORS = (DataError, OSError, TypeError, ValueError)


def load_model(model, default=DEFAULT_MODEL):
    """A CLIP model from a name, a directory, a ``.ckpt``/``.safetensors`` path, or a model instance (used as
    it is: never copied, switched to eval mode or otherwise changed). A path that does not exist is a
    ``ConfigError`` saying so (:func:`mindram.catalog.check_model_path`)."""
    model = default if model is None else model
    if isinstance(model, (str, os.PathLike)):
        catalog.check_model_path(model)
        return CLIPModel.from_pretrained(model)
    if hasattr(model, "get_image_features") and hasattr(model, "get_text_features"):
        return model
    raise TypeError(f"model must be a model name, a directory or checkpoint path, or a CLIPModel; "
                    f"got {type(model).__name__}")


def catalog_preprocess(model):
    """The catalog's preprocessing overrides (mean/std/resize_mode...) for the weights ``model`` was loaded as."""
    name = getattr(getattr(model, "config", None), "checkpoint_name_or_path", None)
    if not name:
        return {}
    try:
        return dict(catalog.resolve("clip", str(name)).preprocess)
    except (KeyError, ConfigError):  # a name the catalog does not know, or a path that has gone
        logger.debug("%r is not in the catalog; using OpenAI preprocessing", name)
        return {}


def build_image_processor(model, image_processor=None):
    """``image_processor`` as given (instance or dict), else a :class:`CLIPImageProcessor` for ``model``:
    its image size and the catalog's preprocessing for its weights."""
    if image_processor is None:
        image_processor = CLIPImageProcessor.from_dict({"image_size": model.image_size, **catalog_preprocess(model)})
    elif isinstance(image_processor, dict):
        image_processor = CLIPImageProcessor.from_dict({"image_size": model.image_size, **image_processor})
    elif not hasattr(image_processor, "preprocess"):
        raise TypeError(f"image_processor must be a CLIPImageProcessor or a dict of its arguments, "
                        f"got {type(image_processor).__name__}")
    size = getattr(image_processor, "image_size", model.image_size)
    if size != model.image_size:
        raise ValueError(f"image_processor.image_size {size} differs from the model's image size {model.image_size}")
    return image_processor


def describe(item):
    """Short description of an input for messages: the path, or the type and shape."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    shape = getattr(item, "shape", None)
    shape = shape if isinstance(shape, tuple) else getattr(item, "size", None)  # numpy shape, PIL (w, h)
    return f"{type(item).__name__} {shape}" if isinstance(shape, tuple) else type(item).__name__


def as_items(inputs):
    """``(single, items)``: a list/tuple or a 4-D numpy batch is many inputs, anything else one."""
    if isinstance(inputs, (list, tuple)):
        return False, list(inputs)
    if isinstance(inputs, np.ndarray) and inputs.ndim == 4:
        return False, list(inputs)
    return True, [inputs]


class Pipeline(abc.ABC):
    """Base of mindram pipelines; subclasses set ``task`` and implement the four steps."""

    task = None

    def __init__(self, model=None, image_processor=None, tokenizer=None, batch_size=8, **kwargs):
        self.model = load_model(model)
        self.image_processor = build_image_processor(self.model, image_processor)
        self.tokenizer = tokenizer
        self.batch_size = check_batch_size(batch_size)
        self._defaults = self._sanitize_parameters(**kwargs)

    def _sanitize_parameters(self, **kwargs):
        """Split call options into ``(preprocess_params, forward_params, postprocess_params)``; reject unknown ones."""
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unknown option(s) {sorted(kwargs)}")
        return {}, {}, {}

    def _call_parameters(self, kwargs):
        call = self._sanitize_parameters(**kwargs)
        return tuple({**default, **override} for default, override in zip(self._defaults, call))

    @abc.abstractmethod
    def preprocess(self, inputs, offset=0, strict=False, **params):
        """A batch of raw inputs → model inputs."""

    @abc.abstractmethod
    def _forward(self, model_inputs, **params):
        """Model inputs → model outputs."""

    @abc.abstractmethod
    def postprocess(self, model_outputs, **params):
        """Model outputs → one result per input of the batch."""

    def __call__(self, inputs, batch_size=None, **kwargs):
        """Run the pipeline on one input or a list; returns a list with one result per input."""
        pre, forward, post = self._call_parameters(kwargs)
        batch_size = self.batch_size if batch_size is None else check_batch_size(batch_size)
        single, items = as_items(inputs)
        results = []
        for start in range(0, len(items), batch_size):
            model_inputs = self.preprocess(items[start:start + batch_size], offset=start, strict=single, **pre)
            results.extend(self.postprocess(self._forward(model_inputs, **forward), **post))
        return results

    def load_images(self, items, offset=0, strict=False):
        """Preprocess images one by one: ``(pixels (n_ok, 3, S, S) or None, ok mask)``.

        With ``strict`` the first failure raises; otherwise a failing item is logged (index, path, error)
        and marked ``False`` in the mask.
        """
        arrays, ok = [], []
        for i, item in enumerate(items):
            try:
                arrays.append(self.image_processor.preprocess(item))
                ok.append(True)
            except ITEM_ERRORS as e:
                if strict:
                    raise
                logger.warning("%s: skipping input %d (%s): %s: %s", self.task, offset + i, describe(item),
                               type(e).__name__, e)
                ok.append(False)
        return (np.stack(arrays) if arrays else None), ok

    def __repr__(self):
        return f"{type(self).__name__}(task={self.task!r}, model={type(self.model).__name__}, " \
               f"batch_size={self.batch_size})"

"""Pipeline base class: ``_sanitize_parameters`` → ``preprocess`` → ``_forward`` → ``postprocess``.

A pipeline is built once (model, image processor, tokenizer, default options) and called on one input or
a list; it splits lists into batches of ``batch_size`` itself. Options given at construction are defaults
that every call may override (``clf(img, top_k=1)``). Graph compilation is per batch shape, so subclasses
pad their batches (see :func:`mindram.models.clip.zero_shot.encode_in_batches`). The model is loaded through
the class's model hook (:meth:`Pipeline.load_model`), so a pipeline works with any registered family that
has its ``model_methods``.

Bad inputs: in a list, an image that cannot be read is skipped and reported (a warning naming its index
and path) and its result is ``None``; a single bad input raises (``DataError``, ``FileNotFoundError`` or
``TypeError`` from the image processor).
"""
import abc
import logging
import os

import numpy as np

from .. import catalog
from ..errors import DataError
from ..models.image_processing_utils import config_image_size
from ..registry import MindFormerModuleType, MindFormerRegister
from ..utils.validation import check_batch_size

logger = logging.getLogger(__name__)

ITEM_ERRORS = (DataError, OSError, TypeError, ValueError)


def build_image_processor(model, image_processor=None):
    """``image_processor`` as given (an instance), a dict of constructor arguments for the model's
    ``image_processor_class`` (over the model's own preprocessing), or None: ``model.image_processor`` (its
    image size and the catalog's preprocessing for its weights). A model with ``check_image_size(size)`` (RAM,
    RAM++: any multiple of the Swin patch) checks the processor's size itself; for other models a size other
    than the model's is a ``ValueError``."""
    if image_processor is None:
        image_processor = model.image_processor
    elif isinstance(image_processor, dict):
        image_processor = type(model).image_processor_class.for_config(model.config, **image_processor)
    elif not hasattr(image_processor, "preprocess"):
        raise TypeError(f"image_processor must be a {type(model).image_processor_class.__name__} or a dict of its "
                        f"arguments, got {type(image_processor).__name__}")
    expected = config_image_size(model.config)
    size = getattr(image_processor, "image_size", expected)
    check = getattr(model, "check_image_size", None)
    if check is not None:
        check(size)
    elif size != expected:
        raise ValueError(f"image_processor.image_size {size} differs from the model's image size {expected}")
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
    """Base of mindram pipelines; subclasses set ``task``, say which models they take, and implement the four
    steps. Every subclass calls ``super().__init__``, which loads the model through :meth:`load_model`.

    Model hook (class attributes): ``model_types`` (registered ``MODELS`` names; a name or path loads as
    :meth:`model_class`, by default the first of them), ``default_model`` (the name loaded for ``model=None``)
    and ``model_methods`` (what a model *instance* must have: any family that has them is accepted).
    """

    task = None
    model_types = ()
    default_model = None
    model_methods = ()

    def __init__(self, model=None, image_processor=None, tokenizer=None, batch_size=8, **kwargs):
        self._defaults = self._sanitize_parameters(**kwargs)
        self.batch_size = check_batch_size(batch_size)
        self.model = self.load_model(model)
        self.image_processor = build_image_processor(self.model, image_processor)
        self.tokenizer = tokenizer if tokenizer is not None else getattr(self.model, "tokenizer", None)

    @classmethod
    def model_class(cls, name_or_path):
        """The model class a name or path loads as (through the registry); override to choose by the name."""
        return MindFormerRegister.get_cls(MindFormerModuleType.MODELS, cls.model_types[0])

    @classmethod
    def load_model(cls, model):
        """A model from a name, a directory, a ``.ckpt``/``.safetensors`` path (``model_class(...)
        .from_pretrained``), or a model instance (used as it is: never copied, switched to eval mode or otherwise
        changed). A path that does not exist is a ``ConfigError`` saying so
        (:func:`mindram.catalog.check_model_path`)."""
        model = cls.default_model if model is None else model
        if isinstance(model, (str, os.PathLike)):
            catalog.check_model_path(model)
            return cls.model_class(model).from_pretrained(model)
        if cls.model_methods and all(hasattr(model, name) for name in cls.model_methods):
            return model
        raise TypeError(f"{cls.task}: model must be a model name, a directory or checkpoint path, or a "
                        f"{'/'.join(cls.model_types)} instance (a model with {', '.join(cls.model_methods)}); "
                        f"got {type(model).__name__}")

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

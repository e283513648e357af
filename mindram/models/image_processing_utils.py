"""What every image processor shares: building one for a model config and the weights it was loaded as.

This is the one place that applies the weights catalog's preprocessing (``preprocess:`` of a record in
``configs/<family>/pretrained.yaml``: mean/std 0.5 for some LAION weights, ``resize_mode: squash`` for DFN...):
:meth:`BaseImageProcessor.for_config` and :meth:`BaseImageProcessor.from_pretrained` use it, and so do
``model.image_processor``, the tasks and the pipelines, which all build through them.
"""
import logging

from .. import catalog
from ..errors import ConfigError

logger = logging.getLogger(__name__)


def catalog_preprocess(family, name):
    """The catalog's preprocessing overrides for weights ``name`` of ``family``: ``{}`` when ``name`` is None, a
    path, or a name (or family) the catalog does not know, which then use the processor's own defaults."""
    if not name or not family:
        return {}
    try:
        return dict(catalog.resolve(family, str(name)).preprocess)
    except (KeyError, ConfigError):  # an unknown name or family, or a path that has gone
        logger.debug("%r is not a %s catalog name; using the processor's default preprocessing", name, family)
        return {}


def config_image_size(config):
    """The input side of a model config: its ``image_size``, else its ``vision_config.image_size``."""
    size = getattr(config, "image_size", None)
    if size is None:
        size = getattr(getattr(config, "vision_config", None), "image_size", None)
    if size is None:
        raise ConfigError(f"{type(config).__name__} has neither image_size nor vision_config.image_size")
    return size


class BaseImageProcessor:
    """Base of image processors. A subclass implements ``from_dict`` (its constructor arguments), ``to_dict``,
    ``preprocess(image) -> (3, S, S)`` and ``__call__(images) -> (N, 3, S, S)``, has an ``image_size`` and sets
    ``config_class`` (the model config whose names :meth:`from_pretrained` reads)."""

    config_class = None

    @classmethod
    def for_config(cls, config, name=None, **overrides):
        """The processor of a model with ``config`` loaded as weights ``name`` (default:
        ``config.checkpoint_name_or_path``): the config's image size, then the catalog's preprocessing of
        those weights, then ``overrides`` (constructor arguments)."""
        if name is None:
            name = getattr(config, "checkpoint_name_or_path", None)
        cfg = {"image_size": config_image_size(config)}
        cfg.update(catalog_preprocess(getattr(config, "family", None), name))
        cfg.update(overrides)
        return cls.from_dict(cfg)

    @classmethod
    def from_pretrained(cls, name_or_path, **overrides):
        """The processor of a model name (its architecture's image size and the catalog's preprocessing of the
        weights) or of a directory / ``.yaml`` written by ``save_pretrained`` (the config stored there)."""
        if cls.config_class is None:
            raise ConfigError(f"{cls.__name__} has no config_class to read {name_or_path!r} with")
        return cls.for_config(cls.config_class.from_pretrained(name_or_path), **overrides)

"""Strict dataclass configs: unknown keys and wrong types are errors that name the key.

Every field of a model config changes the network (tests check it); a key the dataclass does
not declare is rejected rather than silently ignored.
"""
import dataclasses
import typing
from pathlib import Path

import yaml

from ..errors import ConfigError

_NUMERIC = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}


def _check_type(owner, name, value, annotation):
    """Validate ``value`` against a field annotation (int, float, str, bool, Optional[...])."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return value
        annotation = options[0]
    if annotation in _NUMERIC:
        ok = isinstance(value, _NUMERIC[annotation]) and not (annotation is not bool and isinstance(value, bool))
        if not ok:
            raise ConfigError(f"{owner}.{name}: expected {annotation.__name__}, got {value!r} "
                              f"({type(value).__name__})")
        return annotation(value)
    return value


def check_transformer_config(config, owner):
    """Checks shared by transformer configs: positive sizes, heads dividing the width, a known activation."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise ConfigError(f"{owner}.{field.name}: expected a positive value, got {value!r}")
    if config.hidden_size % config.num_attention_heads:
        raise ConfigError(f"{owner}.hidden_size={config.hidden_size} is not divisible by "
                          f"num_attention_heads={config.num_attention_heads}")
    from ..layers.activation import ACTIVATIONS  # pylint: disable=import-outside-toplevel  # MindSpore: at first use
    if config.hidden_act not in ACTIVATIONS:
        raise ConfigError(f"{owner}.hidden_act: unknown activation {config.hidden_act!r}; "
                          f"expected one of {sorted(ACTIVATIONS)}")


class BaseConfig:
    """Mixin for ``@dataclass`` configs: ``from_dict`` (strict), ``to_dict``, ``validate``."""

    nested: typing.ClassVar[dict] = {}   # field name -> config class of a nested config

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in self.nested:
                cls = self.nested[field.name]
                if value is None:
                    value = cls()
                elif isinstance(value, dict):
                    try:
                        value = cls.from_dict(value)
                    except ConfigError as e:
                        raise ConfigError(f"{type(self).__name__}.{field.name} -> {e}") from e
                elif not isinstance(value, cls):
                    raise ConfigError(f"{type(self).__name__}.{field.name}: expected a mapping or "
                                      f"{cls.__name__}, got {type(value).__name__}")
            else:
                value = _check_type(type(self).__name__, field.name, value, hints[field.name])
            object.__setattr__(self, field.name, value)
        self.validate()

    def validate(self):
        """Cross-field checks; subclasses raise ConfigError naming the key and allowed values."""

    @classmethod
    def field_names(cls):
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data):
        """Build from a mapping, rejecting keys the config does not declare (``type`` is ignored)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
        data = {k: v for k, v in data.items() if k != "type"}
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown key(s) {unknown}; allowed keys: {cls.field_names()}")
        return cls(**data)

    def to_dict(self):
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = value.to_dict() if isinstance(value, BaseConfig) else value
        return out

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        data = self.to_dict()
        data.update(changes)
        return type(self).from_dict(data)


class PretrainedConfig(BaseConfig):
    """A model config that is read from the catalog's YAML files and written beside checkpoints.

    Subclasses set ``family`` (the catalog family, e.g. ``"clip"``) and may override
    :meth:`arch_type` (the ``model.arch.type`` written by :meth:`save`).
    """

    family: typing.ClassVar[str] = None
    arch_name: typing.ClassVar[str] = None

    def arch_type(self):
        return self.arch_name

    @classmethod
    def show_support_list(cls, with_status=False):
        """Every name accepted by ``from_pretrained`` (architectures and architecture.weights); with
        ``with_status``, ``{name: True if its converted checkpoint is present locally}``."""
        from .. import catalog
        return catalog.support_list(cls.family, with_status=with_status)

    @classmethod
    def from_yaml(cls, path):
        """Read a model YAML (MindFormers layout ``model.model_config``, or a bare mapping)."""
        from ..config import MindFormerConfig
        data = MindFormerConfig(str(path)).to_dict()
        data = data.get("model", data)
        try:
            return cls.from_dict(data.get("model_config", data))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e

    @classmethod
    def from_pretrained(cls, name_or_path):
        """Config of a supported model name, a ``.yaml`` file, or a directory with ``config.yaml``."""
        from .. import catalog
        path = Path(str(name_or_path)).expanduser()
        if path.is_dir() or path.suffix in (".yaml", ".yml"):
            path = path / "config.yaml" if path.is_dir() else path
            if not path.is_file():
                raise ConfigError(f"{path}: no such config file (save_pretrained writes config.yaml)")
            return cls.from_yaml(path)
        record = catalog.resolve(cls.family, str(name_or_path))
        config = cls.from_yaml(record.arch_file)
        if "checkpoint_name_or_path" in cls.field_names():
            config = config.replace(checkpoint_name_or_path=record.name)
        return config

    def save(self, path):
        """Write this config as a MindFormers-layout YAML (``model.arch`` + ``model.model_config``)."""
        data = {"model": {"arch": {"type": self.arch_type()},
                          "model_config": {"type": type(self).__name__, **self.to_dict()}}}
        Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")

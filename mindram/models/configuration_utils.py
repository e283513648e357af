"""Strict dataclass configs: unknown keys and wrong types are errors that name the key.

Every field of a model config changes the network (tests check it); a key the dataclass does
not declare is rejected rather than silently ignored.
"""
import dataclasses
import typing

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

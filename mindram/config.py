"""MindFormerConfig: YAML run/model configs with ``base_config`` inheritance and dotted overrides.

A config file may name one or more parent files in ``base_config`` (paths relative to the file);
parents are merged first, in order, then the file itself, dictionaries merging key by key.
``merge_from_dict({"model.model_config.projection_dim": 256})`` applies dotted overrides.
"""
import copy
import os
from pathlib import Path

import yaml

from .errors import ConfigError


class MindFormerConfig(dict):
    """A dict with attribute access, built from YAML files or keyword arguments."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        source = None
        if args and isinstance(args[0], (str, os.PathLike)):
            source, args = args[0], args[1:]
        data = {}
        if source is not None:
            data = load_yaml_with_bases(source)
        for arg in args:
            data = deep_merge(data, dict(arg))
        data = deep_merge(data, kwargs)
        for key, value in data.items():
            self[key] = _wrap(value)

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            return None

    def __setattr__(self, key, value):
        self[key] = _wrap(value)

    def __delattr__(self, key):
        del self[key]

    def __deepcopy__(self, memo):
        return MindFormerConfig(copy.deepcopy(self.to_dict(), memo))

    def to_dict(self):
        """Plain nested dicts/lists (for YAML dumps and dataclass construction)."""
        return _unwrap(self)

    def merge_from_dict(self, options):
        """Apply ``{"a.b.c": value}`` overrides; intermediate dicts are created as needed."""
        for dotted, value in options.items():
            node = self
            keys = dotted.split(".")
            for key in keys[:-1]:
                if key not in node or not isinstance(node[key], dict):
                    node[key] = MindFormerConfig()
                node = node[key]
            node[keys[-1]] = _wrap(value)
        return self


def _wrap(value):
    if isinstance(value, dict) and not isinstance(value, MindFormerConfig):
        return MindFormerConfig(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _unwrap(value):
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def deep_merge(base, override):
    """Return ``base`` updated by ``override``; nested dicts merge key by key, other values replace."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path):
    """Load one YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_yaml_with_bases(path, _seen=None):
    """Read ``path`` and recursively merge the files named in its ``base_config``."""
    path = Path(path).resolve()
    seen = set(_seen or ())
    if path in seen:
        raise ConfigError(f"{path}: base_config cycle through {sorted(str(s) for s in seen)}")
    seen.add(path)
    data = read_yaml(path)
    bases = data.pop("base_config", None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list):
        raise ConfigError(f"{path}: base_config must be a path or a list of paths, got {bases!r}")
    merged = {}
    for base in bases:
        base_path = (path.parent / base)
        if not base_path.is_file():
            raise ConfigError(f"{path}: base_config file not found: {base} (looked at {base_path})")
        merged = deep_merge(merged, load_yaml_with_bases(base_path, seen))
    return deep_merge(merged, data)

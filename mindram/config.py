"""MindFormerConfig: YAML run/model configs with ``base_config`` inheritance and dotted overrides.

A config file may name one or more parent files in ``base_config`` (paths relative to the file);
parents are merged first, in order, then the file itself, dictionaries merging key by key.
``merge_from_dict({"model.model_config.projection_dim": 256})`` applies dotted overrides.

Numbers are read as YAML 1.2 reads them: ``1e-4`` and ``3E5`` are floats (PyYAML's YAML 1.1 rules would make
them strings, which then fail far from the file, e.g. in the learning-rate schedule).
"""
import copy
import os
import re
from pathlib import Path

import yaml

from .errors import ConfigError


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads exponent numbers without a dot (``1e-4``) as floats."""


ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                                   list("-+0123456789."))


def parse_scalar(text):
    """A YAML value given on a command line (``--options key=value``): numbers, bools, null, lists, else text."""
    try:
        return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError:
        return text


def parse_options(items, flag="--options"):
    """``{dotted key: value}`` from command-line ``KEY=VALUE`` items (values read by :func:`parse_scalar`);
    ConfigError naming ``flag`` and the item for one without ``=`` or a key."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE, e.g. runner_config.max_steps=100")
        overrides[key] = parse_scalar(value)
    return overrides


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
    """Load one YAML mapping; a missing/unreadable file, non-UTF-8 bytes or a YAML syntax error is a
    :class:`ConfigError` naming the file (and the line/column YAML reports)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                          f"save the file as UTF-8") from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror or e}") from e
    try:
        data = yaml.load(text, Loader=ConfigLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise ConfigError(f"{_yaml_position(path, e)}: invalid YAML: {_yaml_problem(e)}; fix the syntax there") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _yaml_position(path, error):
    """``file:line:column`` (1-based) of a YAML error, or the file alone when YAML gives no position."""
    mark = getattr(error, "problem_mark", None)
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)


def _yaml_problem(error):
    """A YAML error's problem and context (with the line the context starts on) as one line."""
    problem = getattr(error, "problem", None)
    if problem is None:
        return " ".join(str(error).split())
    context, mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context and mark is not None:
        return f"{problem} ({context} started at line {mark.line + 1})"
    return f"{problem} ({context})" if context else problem


def load_yaml_with_bases(path, _chain=()):
    """Read ``path`` and recursively merge the files named in its ``base_config``.

    A cycle, or a base file that does not exist, is a :class:`ConfigError` naming the chain of files
    that led to it.
    """
    path = Path(path).resolve()
    chain = tuple(_chain) + (path,)
    if path in _chain:
        raise ConfigError(f"base_config cycle: {_describe_chain(chain)}; remove one of these base_config entries")
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
            via = f" (included via {_describe_chain(chain)})" if len(chain) > 1 else ""
            raise ConfigError(f"{path}: base_config file not found: {base} (looked at {base_path}){via}; "
                              f"base_config paths are relative to the file that names them")
        merged = deep_merge(merged, load_yaml_with_bases(base_path, chain))
    return deep_merge(merged, data)


def _describe_chain(chain):
    """``a.yaml -> b.yaml -> ...``: the files a base_config look-up went through."""
    return " -> ".join(str(p) for p in chain)

"""MindFormerConfig: YAML run/model configs with ``base_config`` inheritance and dotted overrides.

A config file may name one or more parent files in ``base_config`` (paths relative to the file);
parents are merged first, in order, then the file itself, dictionaries merging key by key.
``merge_from_dict({"model.model_config.projection_dim": 256})`` applies dotted overrides.

Numbers are read as YAML 1.2 reads them: ``1e-4`` and ``3E5`` are floats (PyYAML's YAML 1.1 rules would make
them strings, which then fail far from the file, e.g. in the learning-rate schedule).

What one config may cost is bounded (:data:`CONFIG_LIMITS`, each raised by an environment variable): the size of
each file, its nesting depth, and the number of YAML nodes with every alias expanded, summed over the file and
its ``base_config`` files (each distinct file is read once). Over a bound is a one-line :class:`ConfigError`
naming the file and the limit, raised while parsing, before the expansion is built.
"""
import copy
import os
import re
from pathlib import Path

import yaml
from yaml.events import AliasEvent

from .errors import ConfigError
from .utils.env import env_number

#: ``name: (environment variable, default)`` of the bounds on one config load; see docs/limits.md
CONFIG_LIMITS = {
    "max_bytes": ("MINDRAM_CONFIG_MAX_BYTES", 1 << 20),   # per file (or --options value)
    "max_nodes": ("MINDRAM_CONFIG_MAX_NODES", 100_000),   # YAML nodes, aliases expanded, over all files of a load
    "max_depth": ("MINDRAM_CONFIG_MAX_DEPTH", 64),        # nested mappings/sequences
}


def config_limit(name):
    """The bound ``name`` of :data:`CONFIG_LIMITS`: its environment variable when set, else the default (read on
    every call); ConfigError for a variable that is not a positive integer."""
    variable, default = CONFIG_LIMITS[name]
    return env_number(variable, default, meaning=f"{name} of a config, default {default}")


class ConfigBudget:
    """What one config load (a file and its ``base_config`` files, or one ``--options`` value) may still spend:
    the :data:`CONFIG_LIMITS` read when it starts, the nodes counted so far, and each file's merged result."""

    def __init__(self):
        self.max_bytes, self.max_nodes, self.max_depth = (config_limit(name) for name in CONFIG_LIMITS)
        self.nodes = 0
        self.loaded = {}   # resolved path -> its data merged with its bases (a file named twice is read once)

    def add_nodes(self, count, where):
        self.nodes += count
        if self.nodes > self.max_nodes:
            raise ConfigError(f"{where}: the config expands to more than {self.max_nodes} YAML nodes with its "
                              f"aliases expanded (its base_config files counted too), over the limit; for a config "
                              f"you trust raise {CONFIG_LIMITS['max_nodes'][0]}")

    def too_deep(self, where):
        return ConfigError(f"{where}: nested deeper than {self.max_depth} levels, over the limit; for a config you "
                           f"trust raise {CONFIG_LIMITS['max_depth'][0]}")


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads exponent numbers without a dot (``1e-4``) as floats, and refuses a
    document over its :class:`ConfigBudget` while composing it: deeper than ``max_depth`` (flow brackets are
    counted as they are scanned, before PyYAML's quadratic look-ahead over them), or more than ``max_nodes``
    nodes with aliases expanded (counted, never built); an alias to the node that contains it (a recursive
    structure) is refused too."""

    def __init__(self, stream, source="<config>", budget=None):
        super().__init__(stream)
        self.source = source
        self.budget = budget if budget is not None else ConfigBudget()
        self._depth = 0
        self._expanded = {}   # id(anchored node) -> its node count with aliases expanded (set once composed)

    def _where(self, mark):
        return f"{self.source}:{mark.line + 1}:{mark.column + 1}"

    def fetch_flow_collection_start(self, TokenClass):  # noqa: N803 (PyYAML's name)
        super().fetch_flow_collection_start(TokenClass)
        if self.flow_level > self.budget.max_depth:
            raise self.budget.too_deep(self._where(self.get_mark()))

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            node = self.anchors.get(event.anchor)
            if node is not None:
                if id(node) not in self._expanded:
                    raise ConfigError(f"{self._where(event.start_mark)}: alias *{event.anchor} is inside the node "
                                      f"it refers to (a recursive structure); a config must be a tree")
                self.budget.add_nodes(self._expanded[id(node)], self._where(event.start_mark))
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > self.budget.max_depth:
            raise self.budget.too_deep(self._where(event.start_mark))
        start = self.budget.nodes
        node = super().compose_node(parent, index)
        self._depth -= 1
        self.budget.add_nodes(1, self._where(event.start_mark))
        if event.anchor is not None:
            self._expanded[id(node)] = self.budget.nodes - start
        return node


def load_yaml_text(text, source="<config>", budget=None):
    """The data of one YAML document within ``budget`` (default: a fresh :class:`ConfigBudget`); ``source`` names
    it in errors. A limit is a :class:`ConfigError`; YAML syntax errors are ``yaml.YAMLError`` as usual, and a
    value YAML cannot construct (a timestamp out of range, an integer of more digits than Python converts) or
    nesting past Python's recursion limit a ConfigError naming ``source``."""
    budget = budget if budget is not None else ConfigBudget()
    if len(text) > budget.max_bytes:
        raise ConfigError(f"{source}: {len(text)} characters, over the limit of {budget.max_bytes} bytes; for a "
                          f"config you trust raise {CONFIG_LIMITS['max_bytes'][0]}")
    loader = ConfigLoader(text, source, budget)
    try:
        return loader.get_single_data()
    except (ConfigError, yaml.YAMLError):
        raise
    except RecursionError as e:
        raise ConfigError(f"{source}: nested too deeply for Python to read (MINDRAM_CONFIG_MAX_DEPTH is "
                          f"{budget.max_depth}); lower it or flatten the config") from e
    except (ValueError, TypeError, OverflowError) as e:
        raise ConfigError(f"{source}: a value YAML cannot construct: {' '.join(str(e).split())}") from e
    finally:
        loader.dispose()


ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                                   list("-+0123456789."))


def parse_scalar(text, source="command-line value"):
    """A YAML value given on a command line (``--options key=value``): numbers, bools, null, lists, else text
    (within the :data:`CONFIG_LIMITS`: a ConfigError naming ``source`` past one)."""
    try:
        return load_yaml_text(text, source)
    except yaml.YAMLError:
        return text


def parse_options(items, flag="--options"):
    """``{dotted key: value}`` from command-line ``KEY=VALUE`` items (values read by :func:`parse_scalar`);
    ConfigError naming ``flag`` and the item for one without ``=`` or a key, or a value over the config limits."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE, e.g. runner_config.max_steps=100")
        overrides[key] = parse_scalar(value, source=f"{flag} {key}")
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


def read_yaml(path, budget=None):
    """Load one YAML mapping within ``budget`` (default: a fresh :class:`ConfigBudget`); a missing/unreadable
    file, non-UTF-8 bytes, a YAML syntax error or a file over a :data:`CONFIG_LIMITS` bound is a
    :class:`ConfigError` naming the file (and the line/column YAML reports)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    budget = budget if budget is not None else ConfigBudget()
    try:
        with open(path, "rb") as file:
            raw = file.read(budget.max_bytes + 1)
        if len(raw) > budget.max_bytes:
            raise ConfigError(f"{path}: larger than the limit of {budget.max_bytes} bytes for a config file; for a "
                              f"config you trust raise {CONFIG_LIMITS['max_bytes'][0]}")
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                          f"save the file as UTF-8") from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror or e}") from e
    try:
        data = load_yaml_text(text, str(path), budget)
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


def load_yaml_with_bases(path, _chain=(), _budget=None):
    """Read ``path`` and recursively merge the files named in its ``base_config``.

    A cycle, or a base file that does not exist, is a :class:`ConfigError` naming the chain of files
    that led to it. All the files share one :class:`ConfigBudget`; a file named more than once is read once.
    """
    path = Path(path).resolve()
    chain = tuple(_chain) + (path,)
    if path in _chain:
        raise ConfigError(f"base_config cycle: {_describe_chain(chain)}; remove one of these base_config entries")
    budget = _budget if _budget is not None else ConfigBudget()
    if path in budget.loaded:
        return budget.loaded[path]
    try:
        data = read_yaml(path, budget)
    except ConfigError as e:
        if len(chain) == 1:
            raise
        raise ConfigError(f"{e} (included via {_describe_chain(chain[:-1])})") from e
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
        merged = deep_merge(merged, load_yaml_with_bases(base_path, chain, budget))
    budget.loaded[path] = deep_merge(merged, data)
    return budget.loaded[path]


def _describe_chain(chain):
    """``a.yaml -> b.yaml -> ...``: the files a base_config look-up went through."""
    return " -> ".join(str(p) for p in chain)

"""MindFormerRegister / MindFormerModuleType: build anything from a YAML ``type:`` name.

``@MindFormerRegister.register(MindFormerModuleType.MODELS)`` makes a class buildable by its
name; :func:`build_from_cfg` builds ``{"type": "CLIPModel", ...}`` and recurses into any nested
mapping that has a ``type`` of its own. An unknown name raises :class:`UnknownNameError` (a
:class:`ConfigError` that is also a ``KeyError``) listing the closest registered names.
"""
import difflib
import inspect
from enum import Enum

from .errors import ConfigError, UnknownNameError  # noqa: F401 (UnknownNameError re-exported)


class MindFormerModuleType(str, Enum):
    """Kinds of buildable modules (MindFormers' names); mindram registers classes under each of them."""

    MODELS = "models"
    CONFIG = "config"
    TOKENIZER = "tokenizer"
    PROCESSOR = "processor"
    DATASET = "dataset"
    TRAINER = "trainer"
    PIPELINE = "pipeline"
    OPTIMIZER = "optimizer"
    LR = "lr"
    METRIC = "metric"


class MindFormerRegister:
    """Class-level registry: ``{module_type: {name: class_or_function}}``."""

    registry = {}
    _loaders = []   # callables that import the modules registering built-in names, run before the first lookup

    @classmethod
    def add_loader(cls, loader):
        """Run ``loader()`` (importing modules that register names) before the registry answers a lookup:
        ``import mindram`` stays light, and a name is found whichever module the caller imported."""
        cls._loaders.append(loader)

    @classmethod
    def _load(cls):
        while cls._loaders:
            cls._loaders.pop(0)()

    @classmethod
    def register(cls, module_type=MindFormerModuleType.MODELS, alias=None):
        """Decorator registering a class/function under its ``__name__`` (and ``alias``)."""
        def wrapper(obj):
            table = cls.registry.setdefault(MindFormerModuleType(module_type), {})
            for name in {obj.__name__, alias} - {None}:
                if name in table and table[name] is not obj:
                    raise KeyError(f"{name!r} is already registered as {module_type.value}: {table[name]}")
                table[name] = obj
            return obj
        return wrapper

    @classmethod
    def register_cls(cls, obj, module_type=MindFormerModuleType.MODELS, alias=None):
        """Register an existing class (e.g. a MindSpore optimizer) without a decorator."""
        return cls.register(module_type, alias)(obj)

    @classmethod
    def names(cls, module_type):
        """Sorted names registered under ``module_type``."""
        cls._load()
        return sorted(cls.registry.get(MindFormerModuleType(module_type), {}))

    @classmethod
    def get_cls(cls, module_type, name):
        """The registered object, or :class:`UnknownNameError` naming the closest registered names."""
        cls._load()
        table = cls.registry.get(MindFormerModuleType(module_type), {})
        if not isinstance(name, str):
            raise ConfigError(f"a {MindFormerModuleType(module_type).value} type name must be a string, got "
                              f"{type(name).__name__} {name!r}")
        if name not in table:
            close = difflib.get_close_matches(str(name), list(table), n=5, cutoff=0.4)
            raise UnknownNameError(f"{name!r} is not a registered {MindFormerModuleType(module_type).value}; "
                           f"closest: {close or 'none'}; registered: {sorted(table)}")
        return table[name]

    @classmethod
    def find(cls, name):
        """Look a ``type`` name up in every module type (for nested configs)."""
        cls._load()
        if not isinstance(name, str):
            return None
        for table in cls.registry.values():
            if name in table:
                return table[name]
        return None


def _build_nested(value):
    if isinstance(value, dict) and "type" in value and MindFormerRegister.find(value["type"]) is not None:
        return build_from_cfg(value)
    if isinstance(value, list):
        return [_build_nested(v) for v in value]
    return value


def build_from_cfg(cfg, module_type=None, default_args=None):
    """Build ``cfg['type']`` with the other keys as keyword arguments (nested ``type`` dicts built too).

    A keyword the class does not accept is a :class:`ConfigError` naming it and the accepted ones.
    """
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise ConfigError(f"expected a mapping with a 'type' key, got {cfg!r}")
    args = dict(cfg)
    name = args.pop("type")
    obj = MindFormerRegister.get_cls(module_type, name) if module_type is not None else MindFormerRegister.find(name)
    if obj is None:
        raise UnknownNameError(f"{name!r} is not registered under any module type")
    args = {k: _build_nested(v) for k, v in args.items()}
    for key, value in (default_args or {}).items():
        args.setdefault(key, value)
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        params = {}
    if params and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(args) - set(params))
        if unknown:
            allowed = [p for p in params if p not in ("self", "args", "kwargs")]
            raise ConfigError(f"{name}: unknown argument(s) {unknown}; allowed: {allowed}")
    return obj(**args)

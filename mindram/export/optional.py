"""Optional dependencies of export and backends, imported on first use with a one-line install hint."""
import importlib

from ..errors import ConfigError


def require(module, pip_spec, purpose):
    """``import module``, or a :class:`ConfigError` saying what needs it and what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"{purpose} needs the {module} package: pip install '{pip_spec}'") from e

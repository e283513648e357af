"""Packages that re-export their submodules' names at first use (PEP 562), so that importing a package — and
every ``python -m mindram.<command> --help`` — does not import MindSpore before it is needed."""
import importlib
import sys


def lazy_exports(package, exports):
    """``(__getattr__, __dir__)`` for ``package`` re-exporting ``{name: relative module}`` on first access.

    A name is imported from its module the first time it is asked for and then kept on the package, so the
    second access is a plain attribute. ``from package import name`` works as with an eager re-export.
    """
    def __getattr__(name):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__

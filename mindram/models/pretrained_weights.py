"""Named weights on first use: the catalog record's source downloaded by :mod:`mindram.hub` and converted by the
family's torch-free converter (``convert:`` of the source picks it, loaded by module name so that this module —
imported by :mod:`mindram.models.modeling_utils` — depends on no family)."""
import importlib

from .. import hub
from ..errors import ConfigError

CONVERTERS = {"clip": "mindram.models.clip.convert", "ram": "mindram.models.ram.convert"}


def converter_for(kind):
    """The ``convert_file(torch_path, mindspore_path, model_name=...)`` of a catalog source's ``convert`` kind
    (what :func:`mindram.hub.ensure_checkpoint` runs on a downloaded file)."""
    try:
        module = CONVERTERS[kind]
    except KeyError:
        raise ConfigError(f"unknown conversion {kind!r}; known: {sorted(CONVERTERS)}") from None
    return importlib.import_module(module).convert_file


def fetch_checkpoint(record, convert=True):
    """``record``'s checkpoint path, downloaded and converted on first use (:func:`mindram.hub.ensure_checkpoint`)."""
    return hub.ensure_checkpoint(record, convert=converter_for, do_convert=convert)

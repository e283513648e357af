"""Which weights exist for which architecture, and where their converted checkpoint lives.

Architectures are data files ``mindram/configs/<family>/model/<arch>.yaml`` (the support list is
built by scanning them). Weights are described apart, in ``mindram/configs/<family>/pretrained.yaml``:
one record per ``arch.tag`` with the architecture it needs, the file name of the converted
checkpoint, the original file to convert and its preprocessing. A bare MindFormers name
(``clip_vit_b_32``) stands for its default tag. Nothing is downloaded: checkpoints are looked up
in ``$MINDRAM_HOME/<family>/`` and a missing one is an error that says what to convert.
"""
import dataclasses
import difflib
import functools
import os
from pathlib import Path
from typing import Optional

from .config import read_yaml
from .errors import CheckpointError, ConfigError, UnknownNameError
from .utils.io import mindram_home

CONFIG_ROOT = Path(__file__).resolve().parent / "configs"
PATH_SUFFIXES = (".ckpt", ".safetensors", ".yaml", ".yml")


@dataclasses.dataclass(frozen=True)
class PretrainedRecord:
    """One resolvable model name."""

    name: str                      # the canonical name asked for (``arch`` or ``arch.tag``)
    family: str
    arch: str                      # architecture file stem
    tag: Optional[str]             # weights tag, None for a bare architecture
    file: str                      # converted checkpoint file name under $MINDRAM_HOME/<family>/
    source: Optional[str] = None   # what to convert, in words
    converter: Optional[str] = None
    sha256: Optional[str] = None   # of the converted checkpoint, when published
    preprocess: dict = dataclasses.field(default_factory=dict)

    @property
    def arch_file(self):
        return CONFIG_ROOT / self.family / "model" / f"{self.arch}.yaml"

    @property
    def checkpoint_path(self):
        return mindram_home() / self.family / self.file

    def missing_checkpoint_error(self):
        source = self.source or f"the PyTorch weights of {self.name}"
        tool = self.converter or f"convert_weights/convert_{self.family}.py"
        return CheckpointError(
            f"no checkpoint for {self.name!r}: expected {self.checkpoint_path}. Nothing is downloaded; "
            f"convert {source} with\n  python {tool} --torch_path <that file> "
            f"--mindspore_path {self.checkpoint_path} --model_name {self.name}\n"
            f"(or set $MINDRAM_HOME to the directory that holds {self.family}/{self.file})")


@functools.lru_cache(maxsize=None)
def _architectures(family):
    folder = CONFIG_ROOT / family / "model"
    if not folder.is_dir():
        raise ConfigError(f"unknown model family {family!r}; known: {sorted(p.name for p in CONFIG_ROOT.iterdir())}")
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def _arch_aliases(family):
    """``aliases:`` lists of the architecture files (open_clip names such as ``ViT-B-32``)."""
    aliases = {}
    for arch, path in _architectures(family).items():
        for alias in read_yaml(path).get("aliases", []):
            aliases[alias] = arch
    return aliases


@functools.lru_cache(maxsize=None)
def _pretrained(family):
    path = CONFIG_ROOT / family / "pretrained.yaml"
    data = read_yaml(path) if path.is_file() else {}
    archs = _architectures(family)
    records, defaults, aliases = {}, {}, _arch_aliases(family)
    for model, entry in data.items():
        tags = entry.get("tags", {})
        default = entry.get("default_tag")
        if default is not None and default not in tags:
            raise ConfigError(f"{path}: {model}.default_tag {default!r} is not one of its tags {sorted(tags)}")
        for tag, rec in tags.items():
            arch = rec.get("arch", model)
            if arch not in archs:
                raise ConfigError(f"{path}: {model}.{tag} names unknown architecture {arch!r}")
            name = f"{model}.{tag}"
            file = rec.get("file", f"{model}.ckpt" if tag == default else f"{name}.ckpt")
            records[name] = PretrainedRecord(name=name, family=family, arch=arch, tag=tag, file=file,
                                             source=rec.get("source"), converter=rec.get("converter"),
                                             sha256=rec.get("sha256"), preprocess=dict(rec.get("preprocess", {})))
            for alias in rec.get("aliases", []):
                aliases[alias] = name
        if default is not None:
            defaults[model] = f"{model}.{default}"
        for alias in entry.get("aliases", []):
            aliases[alias] = model
    return records, defaults, aliases


def architectures(family):
    """Architecture names of a family (the stems of its ``model/*.yaml`` files)."""
    return sorted(_architectures(family))


def arch_file(family, arch):
    """Path of an architecture's YAML file."""
    try:
        return _architectures(family)[arch]
    except KeyError:
        raise UnknownNameError(f"unknown {family} architecture {arch!r}; known: {architectures(family)}") from None


def support_list(family):
    """Sorted names accepted by ``from_pretrained``: architectures, default-weight names, arch.tag."""
    records, defaults, _ = _pretrained(family)
    return sorted(set(_architectures(family)) | set(defaults) | set(records))


def looks_like_path(name):
    """Whether a model argument is meant as a file or directory rather than a model name: it contains a path
    separator, starts with ``.``, ``~`` or ``/``, or ends with a checkpoint/config suffix (``.ckpt``,
    ``.safetensors``, ``.yaml``, ``.yml``). No model name has any of these."""
    text = os.fspath(name) if isinstance(name, os.PathLike) else str(name)
    separators = {"/", os.sep, os.altsep} - {None}
    return any(sep in text for sep in separators) or text.startswith((".", "~")) or text.endswith(PATH_SUFFIXES)


def check_model_path(name):
    """``ConfigError`` when ``name`` looks like a path (:func:`looks_like_path`) and nothing exists there, so
    that a mistyped path is reported as a missing path instead of an unknown model name."""
    if looks_like_path(name) and not Path(os.fspath(name)).expanduser().exists():
        raise ConfigError(f"model path does not exist: {os.fspath(name)}; pass an existing model directory, "
                          f".ckpt/.safetensors file or config .yaml, or a model name (see show_support_list())")


def resolve(family, name):
    """Resolve a model name (``arch``, ``arch.tag`` or an alias) to a :class:`PretrainedRecord`.

    :class:`~mindram.errors.UnknownNameError` (a ``KeyError``, naming the closest names) for an unknown name; ``ConfigError`` for a path that does not exist.
    """
    check_model_path(name)
    records, defaults, aliases = _pretrained(family)
    archs = _architectures(family)
    key = aliases.get(name, name)
    if key in defaults:
        record = records[defaults[key]]
        return dataclasses.replace(record, name=key)
    if key in records:
        return records[key]
    if key in archs:
        return PretrainedRecord(name=key, family=family, arch=key, tag=None, file=f"{key}.ckpt")
    known = support_list(family) + sorted(aliases)
    close = difflib.get_close_matches(str(name), known, n=5, cutoff=0.5)
    raise UnknownNameError(f"unknown {family} model {name!r}; closest: {close or 'none'}; "
                   f"see show_support_list() for all {len(known)} names")

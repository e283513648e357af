"""Which weights exist for which architecture, and where their converted checkpoint lives.

Architectures are data files ``mindram/configs/<family>/model/<arch>.yaml`` (the support list is
built by scanning them). Weights are described apart, in ``mindram/configs/<family>/pretrained.yaml``:
one record per ``arch.tag`` with the architecture it needs, the file name of the converted
checkpoint, the original file to convert and its preprocessing. A bare MindFormers name
(``clip_vit_b_32``) stands for its default tag. Converted checkpoints are looked up in
``$MINDRAM_HOME/<family>/``; a record's ``sources`` say where the original weights can be downloaded
(:mod:`mindram.hub` fetches, verifies and converts them on first use) and a missing checkpoint that
cannot be fetched is an error that says what to convert.

``$MINDRAM_CATALOG`` (paths separated by ``os.pathsep``) adds folders laid out like ``configs/``
(``<family>/model/*.yaml``, ``<family>/pretrained.yaml``) whose entries extend or override the built-in ones.
"""
import dataclasses
import difflib
import functools
import os
from pathlib import Path
from typing import Optional

from .config import read_yaml
from .errors import CheckpointError, ConfigError, UnknownNameError
from .utils.io import hub_endpoint, mindram_home
from .utils.validation import is_sha256

CONFIG_ROOT = Path(__file__).resolve().parent / "configs"
PATH_SUFFIXES = (".ckpt", ".safetensors", ".yaml", ".yml")


CONVERSIONS = ("clip", "ram")    # a source's ``convert``: the family converter to run; None: a MindSpore checkpoint


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """Where original weights can be downloaded: a Hugging Face hub file (``repo`` + ``filename``, resolved
    against ``$MINDRAM_ENDPOINT``/``$HF_ENDPOINT``) or a direct ``url``; ``sha256``/``size`` where published."""

    repo: Optional[str] = None
    filename: Optional[str] = None
    revision: str = "main"
    url_: Optional[str] = None     # a direct URL (``url:`` in pretrained.yaml), used as it is
    sha256: Optional[str] = None
    size: Optional[int] = None
    convert: Optional[str] = None  # one of CONVERSIONS, or None for a MindSpore .ckpt/.safetensors

    @classmethod
    def from_dict(cls, data, where):
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: a source must be a mapping, got {data!r}")
        unknown = sorted(set(data) - {"repo", "filename", "revision", "url", "sha256", "size", "convert"})
        if unknown:
            raise ConfigError(f"{where}: unknown source key(s) {unknown}")
        if bool(data.get("url")) == bool(data.get("repo")) or (data.get("repo") and not data.get("filename")):
            raise ConfigError(f"{where}: a source needs either url, or repo and filename")
        sha256 = data.get("sha256")
        if sha256 is not None and not is_sha256(sha256):
            raise ConfigError(f"{where}: sha256 must be 64 lowercase hex digits, got {sha256!r}")
        if data.get("convert") not in (None, *CONVERSIONS):
            raise ConfigError(f"{where}: convert must be one of {list(CONVERSIONS)} or null, got {data['convert']!r}")
        size = data.get("size")
        return cls(repo=data.get("repo"), filename=data.get("filename") or data["url"].rsplit("/", 1)[-1],
                   revision=str(data.get("revision", "main")), url_=data.get("url"), sha256=sha256,
                   size=None if size is None else int(size), convert=data.get("convert"))

    @property
    def url(self):
        """The download URL: the direct URL, else ``{endpoint}/{repo}/resolve/{revision}/{filename}``."""
        if self.url_:
            return self.url_
        return f"{hub_endpoint()}/{self.repo}/resolve/{self.revision}/{self.filename}"


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
    sources: tuple = ()            # WeightSource alternatives, tried in order

    @property
    def arch_file(self):
        return arch_file(self.family, self.arch)

    @property
    def checkpoint_path(self):
        return mindram_home() / self.family / self.file

    def missing_checkpoint_error(self, reason=None):
        """The error for a checkpoint that is not there and is not downloaded (``reason``: why not, e.g.
        offline mode): what to fetch (the sources' URLs), where to put it, the convert command."""
        source = self.source or f"the PyTorch weights of {self.name}"
        tool = self.converter or f"convert_weights/convert_{self.family}.py"
        urls = " or ".join(s.url for s in self.sources)
        fetch = f"download {urls} and " if urls else ""
        return CheckpointError(
            f"no checkpoint for {self.name!r}: expected {self.checkpoint_path}. {reason or 'Nothing is downloaded'}; "
            f"{fetch}convert {source} with\n  python {tool} --torch_path <that file> "
            f"--mindspore_path {self.checkpoint_path} --model_name {self.name}\n"
            f"(or set $MINDRAM_HOME to the directory that holds {self.family}/{self.file})")


def _roots():
    """The built-in config folder, then those of ``$MINDRAM_CATALOG`` (later ones override earlier ones)."""
    extra = os.environ.get("MINDRAM_CATALOG", "")
    return (CONFIG_ROOT, *(Path(p).expanduser() for p in extra.split(os.pathsep) if p))


def _architectures(family):
    return _architectures_in(family, _roots())


@functools.lru_cache(maxsize=None)
def _architectures_in(family, roots):
    folders = [root / family / "model" for root in roots if (root / family / "model").is_dir()]
    if not folders:
        raise ConfigError(f"unknown model family {family!r}; known: {sorted(p.name for p in CONFIG_ROOT.iterdir())}")
    return {p.stem: p for folder in folders for p in sorted(folder.glob("*.yaml"))}


def _arch_aliases(archs):
    """``aliases:`` lists of the architecture files ``{arch: path}`` (open_clip names such as ``ViT-B-32``)."""
    aliases = {}
    for arch, path in archs.items():
        for alias in read_yaml(path).get("aliases", []):
            aliases[alias] = arch
    return aliases


def _pretrained(family):
    return _pretrained_in(family, _roots())


def _model_entries(family, roots):
    """``(pretrained.yaml path, model, entry)`` of every root, later roots overriding a model of earlier ones."""
    entries = {}
    for root in roots:
        path = root / family / "pretrained.yaml"
        for model, entry in ((read_yaml(path) or {}) if path.is_file() else {}).items():
            entries[model] = (path, entry)
    return [(path, model, entry) for model, (path, entry) in entries.items()]


def _sources(rec, where):
    sources = rec.get("sources", [])
    if not isinstance(sources, list):
        raise ConfigError(f"{where}.sources: expected a list of sources, got {sources!r}")
    return tuple(WeightSource.from_dict(src, f"{where}.sources[{i}]") for i, src in enumerate(sources))


@functools.lru_cache(maxsize=None)
def _pretrained_in(family, roots):
    archs = _architectures_in(family, roots)
    records, defaults, aliases = {}, {}, _arch_aliases(archs)
    for path, model, entry in _model_entries(family, roots):
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
                                             sha256=rec.get("sha256"), preprocess=dict(rec.get("preprocess", {})),
                                             sources=_sources(rec, f"{path}: {name}"))
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


def support_list(family, with_status=False):
    """Sorted names accepted by ``from_pretrained``: architectures, default-weight names, arch.tag. With
    ``with_status``: ``{name: whether its converted checkpoint is present in $MINDRAM_HOME}`` (same order)."""
    records, defaults, _ = _pretrained(family)
    names = sorted(set(_architectures(family)) | set(defaults) | set(records))
    if not with_status:
        return names
    return {name: resolve(family, name).checkpoint_path.is_file() for name in names}


def looks_like_path(name):
    """Whether a model argument is meant as a file or directory rather than a model name: it contains a path
    separator, starts with ``.``, ``~`` or ``/``, or ends with a checkpoint/config suffix (``.ckpt``,
    ``.safetensors``, ``.yaml``, ``.yml``). No model name has any of these."""
    text = os.fspath(name) if isinstance(name, os.PathLike) else str(name)
    separators = {"/", os.sep, os.altsep} - {None}
    return any(sep in text for sep in separators) or text.startswith((".", "~")) or text.endswith(PATH_SUFFIXES)


def is_alias(name):
    """Whether ``name`` is an ``aliases:`` entry of some family's weights (PaddleMIX ids such as
    ``paddlemix/CLIP/CLIP-ViT-B-16-laion2B-s34B-b88K`` contain ``/`` but are names, not paths)."""
    families = {p.parent.name for root in _roots() for p in root.glob("*/pretrained.yaml")}
    return any(str(name) in _pretrained(family)[2] for family in sorted(families))


def check_model_path(name):
    """``ConfigError`` when ``name`` looks like a path (:func:`looks_like_path`) and nothing exists there, so
    that a mistyped path is reported as a missing path instead of an unknown model name (aliases excepted)."""
    if looks_like_path(name) and not Path(os.fspath(name)).expanduser().exists() and not is_alias(os.fspath(name)):
        raise ConfigError(f"model path does not exist: {os.fspath(name)}; pass an existing model directory, "
                          f".ckpt/.safetensors file or config .yaml, or a model name (see show_support_list())")


def _open_clip_name(family, name, records, defaults, archs):
    """The record of an open_clip architecture name (an ``aliases:`` entry of an architecture file, e.g.
    ``ViT-B-32``), alone or paired with a weights tag (``ViT-B-32.laion2b_s34b_b79k``); else None.

    As in open_clip, such a name is always its architecture — ``ViT-B-32`` is exact GELU, never the OpenAI
    QuickGELU weights that the MindFormers name ``clip_vit_b_32`` stands for. Alone it loads a checkpoint
    converted for that architecture: ``<arch>.ckpt``, or ``<arch>.arch.ckpt`` when the architecture's name
    is also a weights name (the four MindFormers names). With a tag it is the weights ``<model>.<tag>``
    whose model or architecture is that architecture (the weights decide the activation)."""
    arch_aliases = _arch_aliases(archs)
    base, _, tag = name.partition(".")
    base = _case_insensitive(base, list(arch_aliases), {})
    arch = arch_aliases.get(base)
    if arch is None:
        return None
    if not tag:
        file = f"{arch}.arch.ckpt" if arch in defaults else f"{arch}.ckpt"
        return PretrainedRecord(name=base, family=family, arch=arch, tag=None, file=file)
    matches = [r for r in records.values() if r.tag == tag and (r.name.partition(".")[0] == arch or r.arch == arch)]
    if len(matches) != 1:
        tags = sorted(r.tag for r in records.values() if r.name.partition(".")[0] == arch or r.arch == arch)
        raise UnknownNameError(f"unknown {family} weights {name!r}: architecture {base} ({arch}) has the weights "
                               f"tags {tags or 'none'}")
    return matches[0]


def _case_insensitive(name, known, aliases):
    """The one known name equal to ``name`` ignoring case (MindFormers prints ``clip_vit_B_16``), else ``name``."""
    matches = {k for k in known if k.lower() == name.lower()}
    if len(matches) != 1:
        return name
    match = matches.pop()
    return aliases.get(match, match)


def resolve(family, name):
    """Resolve a model name (``arch``, ``arch.tag`` or an alias) to a :class:`PretrainedRecord`.

    :class:`~mindram.errors.UnknownNameError` (a ``KeyError``, naming the closest names) for an unknown name; ``ConfigError`` for a path that does not exist.
    """
    check_model_path(name)
    records, defaults, aliases = _pretrained(family)
    archs = _architectures(family)
    arch_record = _open_clip_name(family, str(name), records, defaults, archs)
    if arch_record is not None:
        return arch_record
    key = aliases.get(name, name)
    if key not in defaults and key not in records and key not in archs:
        key = _case_insensitive(str(key), list(defaults) + list(records) + list(archs) + list(aliases), aliases)
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

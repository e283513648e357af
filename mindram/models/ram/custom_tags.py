"""Extend a RAM / RAM++ model's vocabulary with new tags for fine-tuning (docs/ram.md#fine-tuning-on-custom-tags).

``label_embed`` is frozen in RAM training, so a new tag's rows never change: rows of zeros (what a plain resize of
the parameter gives, recognize-anything issue #211) make every new tag the same query, and fine-tuning cannot
tell them apart. :func:`add_custom_tags` instead initialises them as the open set does
(:mod:`mindram.models.ram.openset`, through :func:`~mindram.models.ram.mixed_vocabulary.mixed_vocabulary`):
RAM the mean of the 63 prompt-template features of the tag, RAM++ the features of its descriptions as its
per-description rows (repeated to the model's ``descriptions_per_tag``), from a CLIP text tower. It returns a
**new** model (the caller's is not changed) whose parameters are the old ones plus the new rows, and whose
config names the extended tag list, Chinese list and threshold file (written to ``vocabulary_dir``, default a
content-addressed folder under ``$MINDRAM_HOME/ram/custom_tags/``), so ``save_pretrained`` / ``from_pretrained``
round-trip it. The config names those files by absolute path; ``save_pretrained`` (and the Trainer's checkpoints,
``final/`` and ``best/``) copy them beside the saved ``config.yaml`` and refer to them relative to it
(:meth:`RAMConfig.save <mindram.models.ram.configuration.RAMConfig.save>`), so a saved model loads on another
machine or after the cache folder is deleted.
"""
import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError
from ...utils.io import atomic_write, mindram_home
from ...utils.random import no_init_weights
from . import openset, tags
from .mixed_vocabulary import mixed_vocabulary

logger = logging.getLogger(__name__)

FILES = {"tag_list": "tag_list.txt", "tag_list_chinese": "tag_list_chinese.txt",
         "threshold_file": "tag_list_threshold.txt"}


def _write_lines(path, lines):
    """One entry per line, no trailing newline (RAM's layout; read back by ``read_tag_list`` unchanged)."""
    with atomic_write(path, allow_empty=True) as tmp:
        Path(tmp).write_text("\n".join(lines), encoding="utf-8")


def write_vocabulary_files(vocabulary, directory=None):
    """Write ``vocabulary``'s names, Chinese names and thresholds as RAM tag files; ``{config key: path}``.

    ``directory`` default: ``$MINDRAM_HOME/ram/custom_tags/<sha256 of the contents>`` (the same vocabulary
    always gets the same folder)."""
    contents = {"tag_list": list(vocabulary.names), "tag_list_chinese": list(vocabulary.names_chinese),
                "threshold_file": [repr(float(t)) for t in vocabulary.thresholds]}
    if directory is None:
        digest = hashlib.sha256(json.dumps(contents, ensure_ascii=False).encode("utf-8")).hexdigest()
        directory = mindram_home() / "ram" / "custom_tags" / digest[:24]
    directory = Path(directory).expanduser().resolve()
    paths = {key: str(directory / FILES[key]) for key in FILES}
    for key, lines in contents.items():
        _write_lines(paths[key], lines)
    return paths


def add_custom_tags(model, tag_names, descriptions=None, threshold=None, tag_names_chinese=None,
                    clip_model=openset.DEFAULT_CLIP, cache=True, vocabulary_dir=None):
    """A new model with ``tag_names`` appended to ``model``'s vocabulary (module docstring).

    Args:
        model: a RAM or RAMPlus (its closed-set vocabulary; an installed open set is refused).
        tag_names: new, distinct tag names (a list or one comma-separated string), none already in the vocabulary.
        descriptions: RAM++ only: ``{tag: [strings]}``, a list parallel to the tags, or the reference's LLM json
            (default ``'a photo of a <tag>.'``); RAM uses its prompt templates.
        threshold: the new tags' threshold (default the config's ``threshold``); the old tags keep theirs.
        tag_names_chinese: default the English names.
        clip_model: the CLIP whose text tower embeds the new tags (a name, directory or ``CLIPModel``; its
            ``projection_dim`` must be the model's ``label_embed_dim``). cache: the open-set embedding cache.
        vocabulary_dir: where the extended tag files go (:func:`write_vocabulary_files`).
    """
    if model.open_set_label_embed is not None:
        raise ConfigError("add_custom_tags: the model has an open-set vocabulary installed; call "
                          "clear_open_set_tags() first (custom tags extend the closed set)")
    threshold = model.config.threshold if threshold is None else threshold
    vocabulary = mixed_vocabulary(model, tag_names, descriptions, threshold, tag_names_chinese, clip_model, cache)
    embed = vocabulary.label_embed.asnumpy()
    embed = embed.reshape(-1, embed.shape[-1])  # RAM++: tag-major rows, descriptions_per_tag per tag
    files = write_vocabulary_files(vocabulary, vocabulary_dir)
    config = model.config.replace(num_tags=len(vocabulary.names), **files)
    state = model.state_dict()
    state["label_embed"] = np.ascontiguousarray(embed, np.float32)
    with no_init_weights():   # loaded strictly next
        extended = type(model)(config)
    extended.load_weights(state)
    extended.set_train(model.training)
    added = len(vocabulary.names) - model.config.num_tags
    logger.info("added %d custom tag(s) to %s: %d tags, vocabulary files in %s", added, type(model).__name__,
                config.num_tags, Path(files["tag_list"]).parent)
    return extended


def read_descriptions(path):
    """A descriptions json (``{tag: [strings]}`` or the reference's LLM list), or None for no path."""
    if not path:
        return None
    try:
        return json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read custom tag descriptions {path} as json ({type(e).__name__}: {e})") from e


def apply_custom_tag_files(model, tag_file, descriptions_file=None, clip_model=openset.DEFAULT_CLIP):
    """``tagging.custom_tags``: the tags of ``tag_file`` (one per line) added with :func:`add_custom_tags`;
    ``model`` itself when it has them all already (a checkpoint trained with them)."""
    try:
        names = tags.parse_tag_names(tags.read_tag_list(tag_file, skip_blank=True), f"custom tags {tag_file}")
    except FileNotFoundError as e:
        raise ConfigError(f"tagging.custom_tags: tag list file not found: {tag_file}") from e
    except DataError as e:
        raise ConfigError(f"tagging.custom_tags: {e}") from e
    known = set(model.tag_list)
    if all(name in known for name in names):
        logger.info("the model already has the %d custom tags of %s", len(names), tag_file)
        return model
    try:
        return add_custom_tags(model, names, read_descriptions(descriptions_file), clip_model=clip_model)
    except (ConfigError, DataError) as e:
        raise ConfigError(f"tagging.custom_tags {tag_file}: {e}") from e

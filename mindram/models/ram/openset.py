"""Open-set label embeddings from the CLIP ViT-B/16 text tower (docs/ram.md#open-set).

- RAM++ (``ram_plus``): each tag has D description strings (the reference's LLM file: string 0 is
  ``'a photo of a <tag>.'`` followed by GPT descriptions); every string is tokenized (77 tokens,
  truncated), encoded and L2-normalised; no averaging → (K, D, 512). Without descriptions a tag
  gets the single description ``'a photo of a <lower-cased tag>.'``.
- RAM (``ram``): 63 prompt templates per tag (recognize-anything ``openset_utils.py``), each
  embedding L2-normalised, averaged, normalised again → (K, 512).

Embeddings are cached in ``$MINDRAM_HOME/ram/openset/`` (always there, whatever the CLIP name or path)
under ``<label>-<model type>-<key>.npy``: the label is the CLIP name's last component made file-name safe
(for people reading the folder), the key a sha256 over the text tower's parameters (names, shapes, bytes:
the weights actually used, so replaced weights at the same path or an in-memory model get their own entry),
the context length, the model type and every text. Files are written atomically; an unreadable or
mismatching cache file is rebuilt with a warning; a cache that cannot be written only costs a warning.
The reference encodes with fp16 CLIP on GPUs and fp32 on CPU; this is the fp32 path.
"""
import logging
from pathlib import Path

import numpy as np

from ...errors import DataError
from ...utils import embedding_cache
from ...utils.arrays import l2_normalize
from ...utils.embedding_cache import weights_digest  # noqa: F401 (re-exported: the cache key's weights part)
from ...utils.io import mindram_home
from .tags import parse_tag_names

logger = logging.getLogger(__name__)
DEFAULT_CLIP = "clip_vit_b_16"
CACHE_VERSION = 2  # part of every cache key: bump when the embedding recipe changes

# recognize-anything ram/utils/openset_utils.py `multiple_templates` (Apache-2.0, Copyright (c) 2022 OPPO)
TEMPLATES = [
    "There is {article} {} in the scene.", "There is the {} in the scene.", "a photo of {article} {} in the scene.",
    "a photo of the {} in the scene.", "a photo of one {} in the scene.", "itap of {article} {}.", "itap of my {}.",
    "itap of the {}.", "a photo of {article} {}.", "a photo of my {}.", "a photo of the {}.", "a photo of one {}.",
    "a photo of many {}.", "a good photo of {article} {}.", "a good photo of the {}.", "a bad photo of {article} {}.",
    "a bad photo of the {}.", "a photo of a nice {}.", "a photo of the nice {}.", "a photo of a cool {}.",
    "a photo of the cool {}.", "a photo of a weird {}.", "a photo of the weird {}.", "a photo of a small {}.",
    "a photo of the small {}.", "a photo of a large {}.", "a photo of the large {}.", "a photo of a clean {}.",
    "a photo of the clean {}.", "a photo of a dirty {}.", "a photo of the dirty {}.",
    "a bright photo of {article} {}.", "a bright photo of the {}.", "a dark photo of {article} {}.",
    "a dark photo of the {}.", "a photo of a hard to see {}.", "a photo of the hard to see {}.",
    "a low resolution photo of {article} {}.", "a low resolution photo of the {}.",
    "a cropped photo of {article} {}.", "a cropped photo of the {}.", "a close-up photo of {article} {}.",
    "a close-up photo of the {}.", "a jpeg corrupted photo of {article} {}.", "a jpeg corrupted photo of the {}.",
    "a blurry photo of {article} {}.", "a blurry photo of the {}.", "a pixelated photo of {article} {}.",
    "a pixelated photo of the {}.", "a black and white photo of the {}.", "a black and white photo of {article} {}.",
    "a plastic {}.", "the plastic {}.", "a toy {}.", "the toy {}.", "a plushie {}.", "the plushie {}.",
    "a cartoon {}.", "the cartoon {}.", "an embroidered {}.", "the embroidered {}.", "a painting of the {}.",
    "a painting of a {}.",
]


def template_prompts(tag):
    """The 63 RAM prompts of one tag, exactly as the reference builds them."""
    name = tag.replace("_", " ").replace("/", " or ").lower().rstrip(".")
    article = "an" if tag[0] in "aeiou" else "a"  # first character of the UNPROCESSED name
    texts = [t.format(name, article=article) for t in TEMPLATES]
    return ["This is " + t if t.startswith("a") or t.startswith("the") else t for t in texts]


def description_texts(tags, descriptions):
    """Per-tag description lists from None, ``{tag: [..]}``, a list parallel to ``tags``, or the reference JSON."""
    if descriptions is None:
        return [[f"a photo of a {tag.lower()}."] for tag in tags]
    if isinstance(descriptions, list) and descriptions and isinstance(descriptions[0], dict):
        descriptions = {k: v for item in descriptions for k, v in item.items()}  # [{tag: [...]}, ...]
    if not isinstance(descriptions, (dict, list, tuple)):
        raise DataError(f"descriptions: expected {{tag: [strings]}} or a list parallel to the tags, "
                        f"got {type(descriptions).__name__}")
    if isinstance(descriptions, dict):
        missing = [t for t in tags if t not in descriptions]
        if missing:
            raise DataError(f"descriptions: no entry for tag(s) {missing[:10]}")
        descriptions = [descriptions[t] for t in tags]
    if len(descriptions) != len(tags):
        raise DataError(f"descriptions: {len(descriptions)} lists for {len(tags)} tags")
    texts = [list(d) if isinstance(d, (list, tuple)) else [d] for d in descriptions]
    bad = [s for t in texts for s in t if not isinstance(s, str)]
    if bad:
        raise DataError(f"descriptions: every description must be a string, got {bad[:3]!r}")
    counts = sorted({len(t) for t in texts})
    if len(counts) != 1 or counts[0] == 0:
        raise DataError(f"descriptions: every tag needs the same number (>= 1) of strings, got counts {counts}")
    return texts


def encode_texts(clip_model, texts, batch_size=256):
    """L2-normalised CLIP text features (N, D) of ``texts``."""
    from ..clip import tokenize
    feats = [clip_model.get_text_features(tokenize(texts[i:i + batch_size], clip_model.context_length)).asnumpy()
             for i in range(0, len(texts), batch_size)]
    return l2_normalize(np.concatenate(feats))


def _load_clip(clip_model):
    """A CLIPModel instance as given, or a name/path loaded with ``CLIPModel.from_pretrained``."""
    from ..clip import CLIPModel
    return CLIPModel.from_pretrained(clip_model) if isinstance(clip_model, (str, Path)) else clip_model


def open_set_texts(model_type, tags, descriptions=None):
    """Per tag, the strings to encode: RAM++ descriptions, or RAM's 63 prompts."""
    if model_type == "ram_plus":
        return description_texts(tags, descriptions)
    if descriptions is not None:
        raise DataError("RAM builds open-set embeddings from prompt templates; descriptions are for RAM++")
    return [template_prompts(t) for t in tags]


def cache_dir():
    return mindram_home() / "ram" / "openset"


def cache_label(name):
    """A file-name-safe label of a CLIP name or path (:func:`mindram.utils.embedding_cache.cache_label`)."""
    return embedding_cache.cache_label(name, default="clip")


def cache_path(clip, name, model_type, texts):
    """The cache file of ``texts`` encoded by ``clip`` (module docstring); always inside :func:`cache_dir`."""
    key = [CACHE_VERSION, model_type, weights_digest(getattr(clip, "text", clip)),
           getattr(clip, "context_length", None), texts]
    return embedding_cache.cache_file(cache_dir(), f"{cache_label(name)}-{model_type}", key)


def build_label_embed(model_type, tags, descriptions=None, clip_model=DEFAULT_CLIP, cache=True):
    """Open-set label embeddings: (K, D, 512) for ``ram_plus``, (K, 512) for ``ram``.

    ``tags``: distinct non-empty names, or one comma-separated string. ``clip_model``: a CLIP name or path,
    or a ``CLIPModel``. With ``cache`` the embeddings are read from / written to the cache (module docstring).
    """
    tags = parse_tag_names(tags, "open-set tags")
    texts = open_set_texts(model_type, tags, descriptions)
    model = _load_clip(clip_model)
    path = None
    if cache:
        name = clip_model if isinstance(clip_model, (str, Path)) else \
            getattr(getattr(model, "config", None), "checkpoint_name_or_path", None)
        path = cache_path(model, name, model_type, texts)
        leading = (len(tags), len(texts[0])) if model_type == "ram_plus" else (len(tags),)
        embed = embedding_cache.read_cached(path, leading + (None,), "open-set embeddings")
        if embed is not None:
            return embed
    per_tag = len(texts[0])
    flat = encode_texts(model, [s for t in texts for s in t]).reshape(len(tags), per_tag, -1)
    embed = flat if model_type == "ram_plus" else l2_normalize(flat.mean(axis=1))
    if path is not None:
        embedding_cache.write_cached(path, embed, "open-set embeddings")
    return embed

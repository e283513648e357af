"""Open-set label embeddings from the CLIP ViT-B/16 text tower (spec §9).

- RAM++ (``ram_plus``): each tag has D description strings (the reference's LLM file: string 0 is
  ``'a photo of a <tag>.'`` followed by GPT descriptions); every string is tokenized (77 tokens,
  truncated), encoded and L2-normalised; no averaging → (K, D, 512). Without descriptions a tag
  gets the single description ``'a photo of a <lower-cased tag>.'``.
- RAM (``ram``): 63 prompt templates per tag (recognize-anything ``openset_utils.py``), each
  embedding L2-normalised, averaged, normalised again → (K, 512).

Embeddings are cached under ``$MINDRAM_HOME/ram/openset/`` keyed by the CLIP model name and the
sha256 of the texts (written atomically). The reference encodes with fp16 CLIP on GPUs and fp32 on
CPU; this is the fp32 path.
"""
import hashlib
import json
import logging

import numpy as np

from ...errors import DataError
from ...utils.io import atomic_write, mindram_home

logger = logging.getLogger(__name__)
DEFAULT_CLIP = "clip_vit_b_16"

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
    if isinstance(descriptions, dict):
        missing = [t for t in tags if t not in descriptions]
        if missing:
            raise DataError(f"descriptions: no entry for tag(s) {missing[:10]}")
        descriptions = [descriptions[t] for t in tags]
    if len(descriptions) != len(tags):
        raise DataError(f"descriptions: {len(descriptions)} lists for {len(tags)} tags")
    texts = [[d] if isinstance(d, str) else list(d) for d in descriptions]
    counts = sorted({len(t) for t in texts})
    if len(counts) != 1 or counts[0] == 0 or not all(isinstance(s, str) for t in texts for s in t):
        raise DataError(f"descriptions: every tag needs the same number (>= 1) of strings, got counts {counts}")
    return texts


def _normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def encode_texts(clip_model, texts, batch_size=256):
    """L2-normalised CLIP text features (N, D) of ``texts``."""
    from ..clip import tokenize
    feats = [clip_model.get_text_features(tokenize(texts[i:i + batch_size], clip_model.context_length)).asnumpy()
             for i in range(0, len(texts), batch_size)]
    return _normalize(np.concatenate(feats).astype(np.float32))


def _load_clip(clip_model):
    """A CLIPModel instance as given, or a name loaded with ``CLIPModel.from_pretrained``."""
    from ..clip import CLIPModel
    return CLIPModel.from_pretrained(clip_model) if isinstance(clip_model, str) else clip_model


def build_label_embed(model_type, tags, descriptions=None, clip_model=DEFAULT_CLIP, cache=True):
    """Open-set label embeddings: (K, D, 512) for ``ram_plus``, (K, 512) for ``ram``."""
    tags = list(tags)
    if not tags or not all(isinstance(t, str) and t for t in tags):
        raise DataError(f"open-set tags must be a non-empty list of non-empty strings, got {tags[:10]!r}")
    if model_type == "ram_plus":
        texts = description_texts(tags, descriptions)
    else:
        if descriptions is not None:
            raise DataError("RAM builds open-set embeddings from prompt templates; descriptions are for RAM++")
        texts = [template_prompts(t) for t in tags]
    clip_name = clip_model if isinstance(clip_model, str) else getattr(clip_model.config, "checkpoint_name_or_path",
                                                                       None)
    path = None
    if cache and clip_name:
        digest = hashlib.sha256(json.dumps([model_type, texts], ensure_ascii=False).encode("utf-8")).hexdigest()
        path = mindram_home() / "ram" / "openset" / f"{clip_name}-{model_type}-{digest}.npy"
        if path.is_file():
            logger.info("open-set embeddings from cache %s", path)
            return np.load(path, allow_pickle=False)
    model = _load_clip(clip_model)
    per_tag = len(texts[0])
    flat = encode_texts(model, [s for t in texts for s in t]).reshape(len(tags), per_tag, -1)
    embed = flat if model_type == "ram_plus" else _normalize(flat.mean(axis=1))
    if path is not None:
        with atomic_write(path) as tmp:
            np.save(tmp, embed)
    return embed

"""The built-in vocabulary *plus* user tags in one vocabulary (recognize-anything can only replace it).

    vocabulary = mixed_vocabulary(model, ["go-kart", "horse racing"], descriptions={"go-kart": [...]})
    model.use_vocabulary(vocabulary)      # or pass vocabulary.label_embed to get_tag_scores

The user tags are encoded like open-set tags (:mod:`mindram.models.ram.openset`: CLIP ViT-B/16 text tower;
RAM++ descriptions, default ``'a photo of a <tag>.'``; RAM its 63 prompt templates) and appended after the
model's current tags, which keep their indices, thresholds, Chinese names and ``delete_tag_index``. One forward
pass scores all of them.

RAM++ weighs each tag's D description embeddings with a softmax over D, and a batch needs one D for all tags:
a user tag with n descriptions gets them repeated to the built-in D (51 in the released checkpoints). When n
divides D every description appears D/n times and the softmax weighting is exactly that of the n alone
(``sum_i m·e^l_i x_i / sum_i m·e^l_i``); otherwise some appear once more than others and get that much more
weight — a warning names such tags (give 1, 3, 17 or 51 descriptions for an exact result with D = 51).
"""
import logging

import numpy as np
from mindspore import Tensor

from ...errors import ConfigError
from . import openset, tags

logger = logging.getLogger(__name__)


def _repeat_to(embed, per_tag, names):
    """(K, n, E) user-tag embeddings repeated along the description axis to (K, per_tag, E)."""
    n = embed.shape[1]
    if n > per_tag:
        raise ConfigError(f"user tags have {n} descriptions each; the model's tags have {per_tag}: give at most "
                          f"{per_tag} descriptions per tag")
    if per_tag % n:
        logger.warning("user tag(s) %s: %d descriptions do not divide the model's %d per tag; repeated to %d, "
                       "%d of them weigh once more than the others (use a divisor of %d for the exact weighting)",
                       ", ".join(names[:5]), n, per_tag, per_tag, per_tag % n, per_tag)
    return embed[:, np.arange(per_tag) % n]


def _user_embed(model, names, descriptions, clip_model, cache):
    """Open-set embeddings of ``names`` (every tag the same number of descriptions, checked by the encoder)."""
    embed = openset.build_label_embed(model.config.model_type, names, descriptions, clip_model, cache)
    if embed.shape[-1] != model.config.label_embed_dim:
        raise ConfigError(f"user-tag embeddings are {embed.shape[-1]}-d, the model needs "
                          f"{model.config.label_embed_dim} (use a CLIP with that projection_dim)")
    return embed


def mixed_vocabulary(model, tag_names, descriptions=None, threshold=0.5, tag_names_chinese=None,
                     clip_model=openset.DEFAULT_CLIP, cache=True):
    """``model``'s current vocabulary with ``tag_names`` appended (module docstring); the model is not changed.

    Arguments as :meth:`~mindram.models.ram.modeling.RAMBase.open_set_vocabulary`. A user tag that is already
    in the vocabulary is a ConfigError (its built-in row would be scored twice)."""
    names = tags.parse_tag_names(tag_names)
    threshold = tags.check_threshold(threshold, "user-tag threshold")
    names_cn = list(tag_names_chinese) if tag_names_chinese is not None else names
    if len(names_cn) != len(names):
        raise ConfigError(f"tag_names_chinese has {len(names_cn)} names for {len(names)} tags")
    base = model.vocabulary()
    known = set(base.names)
    duplicates = [n for n in names if n in known]
    if duplicates:
        raise ConfigError(f"user tag(s) {duplicates[:5]} are already in the model's vocabulary; drop them (their "
                          "built-in rows are scored anyway) or pass their threshold instead")
    current = base.label_embed if base.label_embed is not None else model.default_label_embed()
    current = current.asnumpy() if hasattr(current, "asnumpy") else np.asarray(current)
    user = _user_embed(model, names, descriptions, clip_model, cache)
    if model.is_plus:
        user = _repeat_to(user, current.shape[1], names)
    embed = np.concatenate([current.astype(np.float32), user.astype(np.float32)])
    return tags.Vocabulary(list(base.names) + names, list(base.names_chinese) + names_cn,
                           np.concatenate([base.thresholds, np.full(len(names), threshold, np.float32)]),
                           Tensor(np.ascontiguousarray(embed)), tuple(base.delete_tag_index))

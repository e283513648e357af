"""Zero-shot classification with CLIP: class embeddings from prompt templates, and their logits.

``build_zero_shot_classifier`` follows open_clip 3.3.0's ``build_zero_shot_classifier`` exactly::

    for each class c:  e_c = n( mean_t n(text_features(template_t(c))) )     # n = L2 normalisation
    W = [e_1 ... e_C]  (D, C)

``zero_shot_logits(image_features, W) = 100 · n(image_features) @ W`` (the scale OpenAI and open_clip
use for evaluation). :func:`imagenet_classnames_and_templates` loads OpenAI's 1000 ImageNet class names
and 80 templates (see NOTICE).

:func:`encode_in_batches` is the one batching helper of the inference code (pipelines, embeddings):
every compiled graph is specialised to its batch size, so batches are padded to ``batch_size`` or, for
the last one, to the next power of two — at most ``log2(batch_size) + 1`` shapes are ever compiled.
"""
import functools
import json
import logging
import string
from pathlib import Path
from typing import Callable, List, Sequence, Tuple, Union

import numpy as np
from tqdm.auto import tqdm

from ...errors import ConfigError
from ...utils.arrays import l2_normalize
from ...utils.embedding_cache import cache_file, cache_label, read_cached, weights_digest, write_cached
from ...utils.io import mindram_home
from .tokenizer import CLIPTokenizer, tokenize

logger = logging.getLogger(__name__)

IMAGENET_FILE = Path(__file__).resolve().parent / "imagenet_zeroshot.json"
CLASSIFIER_CACHE_VERSION = 1  # part of every classifier cache key: bump when the recipe changes
Template = Union[str, Callable[[str], str]]


def bucket_size(n, batch_size):
    """Padded size of a batch of ``n`` rows: ``batch_size`` if full, else the next power of two (capped)."""
    if n >= batch_size:
        return batch_size
    return min(batch_size, 1 << max(0, int(n) - 1).bit_length())


def encode_in_batches(encode, array, batch_size):
    """Run ``encode`` over ``array`` in padded batches and return the float32 numpy result for its rows.

    Rows are padded by repeating the last row of the batch (a valid input), and the padded outputs are
    dropped, so the result does not depend on the padding.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    array = np.asarray(array)
    out = []
    for start in range(0, len(array), batch_size):
        chunk = array[start:start + batch_size]
        size = bucket_size(len(chunk), batch_size)
        if size > len(chunk):
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), axis=0)])
        result = encode(chunk)
        result = result.asnumpy() if hasattr(result, "asnumpy") else np.asarray(result)
        out.append(result[:min(batch_size, len(array) - start)].astype(np.float32, copy=False))
    if not out:
        raise ValueError("nothing to encode: the input is empty")
    return np.concatenate(out)


def tokenize_with(tokenizer, texts, context_length):
    """Token ids ``(N, L)`` int32 from ``tokenizer`` (None: :func:`mindram.tokenize`; a ``CLIPTokenizer``;
    or any callable returning ids or a ``{"input_ids": ...}`` dict)."""
    texts = list(texts)
    if tokenizer is None:
        return tokenize(texts, context_length=context_length)
    if isinstance(tokenizer, CLIPTokenizer):
        ids = tokenizer(texts, max_length=context_length, return_tensors="np")
    else:
        ids = tokenizer(texts)
    if isinstance(ids, dict):
        ids = ids["input_ids"]
    return np.asarray(ids.asnumpy() if hasattr(ids, "asnumpy") else ids, dtype=np.int32)


def _render(template, classname):
    if callable(template):
        return template(classname)
    if isinstance(template, str):
        return template.format(classname)
    raise TypeError(f"a template must be a format string such as 'a photo of a {{}}.' or a callable, "
                    f"got {type(template).__name__}: {template!r}")


def _placeholders(template):
    """The replacement fields of a format string, as written (``'{}'``, ``'{name}'``, ``'{0}'``, ``'{:>9}'``)."""
    fields = []
    for _, field, spec, conversion in string.Formatter().parse(template):
        if field is not None:
            fields.append("{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}")
    return fields


def check_templates(templates, name="templates", callables=True) -> List[Template]:
    """``templates`` as a list, each a format string with exactly one bare ``{}`` (where the class name goes;
    ``{{``/``}}`` are literal braces) or, with ``callables``, a callable ``name -> prompt``.

    ``ConfigError`` naming the template otherwise: no ``{}``, more than one, a named or numbered field
    (``{name}``, ``{0}``), a format spec, a malformed brace, or an empty list. The one rule used by the
    zero-shot pipeline, :func:`build_zero_shot_classifier` and the trainer's ``zero_shot.templates``.
    """
    kinds = "a format string such as 'a photo of a {}.'" + (" or a callable" if callables else "")
    if isinstance(templates, (str, bytes)) or not isinstance(templates, Sequence) or len(templates) == 0:
        raise ConfigError(f"{name} must be a non-empty list of templates ({kinds}), got {templates!r}")
    for template in templates:
        if callables and callable(template):
            continue
        if not isinstance(template, str):
            raise ConfigError(f"{name}: {template!r} is a {type(template).__name__}; expected {kinds}")
        try:
            fields = _placeholders(template)
        except ValueError as e:
            raise ConfigError(f"{name}: template {template!r} is not a valid format string ({e}); "
                              "write '{{' and '}}' for literal braces") from None
        if fields != ["{}"]:
            found = ", ".join(fields) if fields else "none"
            raise ConfigError(f"{name}: template {template!r} must have exactly one '{{}}' placeholder for the "
                              f"class name (no names, numbers or format specs), found {found}")
    return list(templates)


def _check_names(name, values):
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty list, got {values!r}")
    return list(values)


def classifier_cache_path(model, classnames, templates, tokenizer=None):
    """The disk-cache file of a zero-shot classifier (``$MINDRAM_HOME/clip/zero_shot/``), keyed by the text
    tower's weights, the context length, the tokenizer's vocabulary, the class names and the templates; None
    when a template or the tokenizer is a callable (nothing stable to key it by)."""
    if any(callable(t) for t in templates) or not (tokenizer is None or isinstance(tokenizer, CLIPTokenizer)):
        return None
    vocab = str(tokenizer.vocab_file) if tokenizer is not None else "default"
    key = [CLASSIFIER_CACHE_VERSION, weights_digest(getattr(model, "text", model)), int(model.context_length),
           vocab, list(classnames), list(templates)]
    name = getattr(getattr(model, "config", None), "checkpoint_name_or_path", None)
    return cache_file(mindram_home() / "clip" / "zero_shot", cache_label(name, "clip"), key)


def build_zero_shot_classifier(model, classnames: Sequence[str], templates: Sequence[Template], tokenizer=None,
                               batch_size: int = 64, progress=None, cache: bool = False) -> np.ndarray:
    """Zero-shot classifier weights ``(D, C)`` float32, one L2-normalised column per class name.

    Args:
        model: a :class:`~mindram.CLIPModel` (anything with ``get_text_features`` and ``context_length``).
        classnames: the C class names.
        templates: format strings with one ``{}`` (``"a photo of a {}."``) or callables ``name -> prompt``
            (see :func:`check_templates`).
        tokenizer: None (``mindram.tokenize``), a ``CLIPTokenizer`` or a callable returning ids.
        batch_size: prompts per text-tower call.
        progress: show a tqdm bar over classes; None: for 100 classes or more, on a terminal.
        cache: read/write the result in ``$MINDRAM_HOME/clip/zero_shot/`` (:func:`classifier_cache_path`), so
            a repeated evaluation (e.g. CIFAR-100's 100 classes x 18 templates) encodes its prompts once.
    """
    classnames = _check_names("classnames", classnames)
    templates = check_templates(templates)
    path = classifier_cache_path(model, classnames, templates, tokenizer) if cache else None
    if path is not None:
        cached = read_cached(path, (None, len(classnames)), "zero-shot classifier")
        if cached is not None:
            return cached
    weights = _encode_classifier(model, classnames, templates, tokenizer, batch_size, progress)
    if path is not None:
        write_cached(path, weights, "zero-shot classifier")
    return weights


def _encode_classifier(model, classnames, templates, tokenizer, batch_size, progress):
    """Every prompt (class x template) encoded in full batches of ``batch_size``, then averaged per class."""
    num_templates = len(templates)
    texts = [_render(t, c) for c in classnames for t in templates]
    ids = tokenize_with(tokenizer, texts, model.context_length)
    # None: a bar for 100+ classes when writing to a terminal (tqdm's disable=None)
    disable = (not progress) if progress is not None else (None if len(classnames) >= 100 else True)
    feats = []
    with tqdm(total=len(texts), desc="zero-shot classifier", unit="prompt", disable=disable) as bar:
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            feats.append(encode_in_batches(model.get_text_features, chunk, batch_size))
            bar.update(len(chunk))
    mean = l2_normalize(np.concatenate(feats)).reshape(len(classnames), num_templates, -1).mean(axis=1)
    logger.debug("built a zero-shot classifier: %d classes x %d templates", len(classnames), num_templates)
    return np.ascontiguousarray(l2_normalize(mean).T, dtype=np.float32)


def zero_shot_logits(image_features, classifier, scale: float = 100.0) -> np.ndarray:
    """``scale · n(image_features) @ classifier``: ``(N, D) x (D, C) -> (N, C)`` float32 logits."""
    feats = image_features.asnumpy() if hasattr(image_features, "asnumpy") else image_features
    classifier = np.asarray(classifier, dtype=np.float32)
    feats = l2_normalize(feats)
    if feats.ndim != 2 or classifier.ndim != 2 or feats.shape[1] != classifier.shape[0]:
        raise ValueError(f"image features {feats.shape} and classifier {classifier.shape} do not match: "
                         "expected (N, D) and (D, C)")
    return np.float32(scale) * (feats @ classifier)


@functools.lru_cache(maxsize=1)
def _imagenet():
    with open(IMAGENET_FILE, encoding="utf-8") as f:
        return json.load(f)


def imagenet_classnames_and_templates(simple: bool = False) -> Tuple[List[str], List[str]]:
    """OpenAI CLIP's 1000 ImageNet class names and its 80 prompt templates (``simple``: the 7-template subset)."""
    data = _imagenet()
    key = "simple_imagenet_templates" if simple else "openai_imagenet_templates"
    return list(data["imagenet_classnames"]), list(data[key])

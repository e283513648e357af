"""``pipeline("zero_shot_image_classification")``: rank candidate labels for images with CLIP.

Scores are ``softmax(100 · cos(image, class))`` over the candidate labels, where each class embedding is
the normalised mean of the normalised text features of its prompts (one per template; see
:func:`mindram.models.clip.zero_shot.build_zero_shot_classifier`). The text side is built once per
(labels, templates) set and cached, so calling on many images encodes the prompts once.
"""
import collections
import logging

import numpy as np

from ..errors import ConfigError
from ..models.clip.zero_shot import build_zero_shot_classifier, check_templates, encode_in_batches, zero_shot_logits
from ..registry import MindFormerModuleType, MindFormerRegister
from ..utils.validation import check_top_k
from .defaults import DEFAULT_CLIP
from .base import Pipeline

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "a picture of {}"


def _labels(value):
    """Candidate labels as a tuple: a list of strings, or one string split at commas (each part stripped).

    ``ConfigError`` for an empty list, a non-string, a blank label (``"cat, dog,"`` has an empty third label)
    or a label given twice.
    """
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"candidate_labels must be a non-empty list of strings, got {value!r}")
    blank = [i for i, v in enumerate(value) if not v.strip()]
    if blank:
        raise ConfigError(f"candidate_labels: label {blank[0]} of {list(value)!r} is blank; remove it "
                          "(a trailing or doubled comma?)")
    if len(set(value)) != len(value):
        twice = sorted({v for v in value if value.count(v) > 1})
        raise ConfigError(f"candidate_labels: {twice} given more than once in {list(value)!r}; list each label once")
    return tuple(value)


def _templates(value):
    value = [value] if isinstance(value, str) or callable(value) else value
    return tuple(check_templates(value, "hypothesis_template"))


@MindFormerRegister.register(MindFormerModuleType.PIPELINE, alias="zero_shot_image_classification")
class ZeroShotImageClassificationPipeline(Pipeline):
    """Zero-shot image classification.

    ``pipeline("zero_shot_image_classification", model="clip_vit_b_32", candidate_labels=["dog", "cat"])``

    Options (at construction as defaults, or per call): ``candidate_labels`` (list of distinct non-blank str,
    or one comma-separated str), ``hypothesis_template`` (a format string with exactly one ``{}``, a callable,
    or a list of them, whose prompts are averaged; default ``"a picture of {}"``), ``top_k`` (a positive int:
    keep the k best; default all). A bad option is a one-line ``ConfigError`` naming it.

    Call with an image (path, PIL image, HWC numpy array) or a list of them. Returns a list with one entry
    per image: a list of ``{"score": float, "label": str}`` sorted by score, highest first — ``None`` for an
    image of a list that could not be read (logged as a warning with its index and path).
    """

    task = "zero_shot_image_classification"
    model_types = ("CLIPModel",)
    default_model = DEFAULT_CLIP
    model_methods = ("get_image_features", "get_text_features")
    max_cached_classifiers = 16
    text_batch_size = 64

    def __init__(self, model=None, image_processor=None, tokenizer=None, batch_size=8, **kwargs):
        kwargs.setdefault("hypothesis_template", DEFAULT_TEMPLATE)
        self._classifiers = collections.OrderedDict()
        super().__init__(model, image_processor, tokenizer, batch_size, **kwargs)

    def _sanitize_parameters(self, candidate_labels=None, hypothesis_template=None, top_k=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unknown option(s) {sorted(kwargs)}; "
                            "allowed: candidate_labels, hypothesis_template, top_k, batch_size")
        forward, post = {}, {}
        if candidate_labels is not None:
            forward["candidate_labels"] = _labels(candidate_labels)
        if hypothesis_template is not None:
            forward["templates"] = _templates(hypothesis_template)
        if top_k is not None:
            post["top_k"] = check_top_k(top_k)
        return {}, forward, post

    def classifier(self, candidate_labels, templates):
        """The ``(D, C)`` zero-shot weights for these labels and templates (built on first use, then cached)."""
        key = (tuple(candidate_labels), tuple(templates))
        try:
            cached = self._classifiers.get(key)
        except TypeError:  # an unhashable callable template: build without caching
            key, cached = None, None
        if cached is None:
            cached = build_zero_shot_classifier(self.model, list(candidate_labels), list(templates),
                                                tokenizer=self.tokenizer, batch_size=self.text_batch_size)
            if key is not None:
                self._classifiers[key] = cached
                while len(self._classifiers) > self.max_cached_classifiers:
                    self._classifiers.popitem(last=False)
        elif key is not None:
            self._classifiers.move_to_end(key)
        return cached

    def preprocess(self, inputs, offset=0, strict=False):
        pixels, ok = self.load_images(inputs, offset, strict)
        return {"pixel_values": pixels, "ok": ok}

    def _forward(self, model_inputs, candidate_labels=None, templates=(DEFAULT_TEMPLATE,)):
        if candidate_labels is None:
            raise ConfigError("no candidate_labels: pass candidate_labels=[...] to pipeline() or to the call")
        weights = self.classifier(candidate_labels, templates)
        logits = None
        if model_inputs["pixel_values"] is not None:
            features = encode_in_batches(self.model.get_image_features, model_inputs["pixel_values"], self.batch_size)
            logits = zero_shot_logits(features, weights)
        return {"logits": logits, "ok": model_inputs["ok"], "labels": candidate_labels}

    def postprocess(self, model_outputs, top_k=None):
        labels, logits = model_outputs["labels"], model_outputs["logits"]
        results, row = [], 0
        for ok in model_outputs["ok"]:
            if not ok:
                results.append(None)
                continue
            z = logits[row].astype(np.float64)
            row += 1
            probs = np.exp(z - z.max())
            probs /= probs.sum()
            order = np.argsort(-probs, kind="stable")[:top_k]
            results.append([{"score": float(probs[i]), "label": labels[i]} for i in order])
        return results

"""``pipeline("image_tagging")``: RAM / RAM++ tags for images, closed-set or open-set.

    tagger = pipeline("image_tagging", model="ram_plus_swin_l_384")
    tagger("demo.jpg")   # [[{'label': 'dog', 'label_cn': '狗', 'score': 0.93, 'class_id': 1234}, ...]]
    pipeline("image_tagging", model=..., open_set_tags=["go-kart", "horse racing"],
             open_set_descriptions={"go-kart": ["a small open racing car", ...]})

Per image, the tags whose score is strictly above their threshold (the reference's ``generate_tag``
rule: per-tag thresholds from the model, or ``threshold=`` for all), minus the model's
``delete_tag_index`` (closed set only), sorted by score (highest first); ``top_k`` keeps the best k.
Options are checked when they are given (``ConfigError`` naming the value). The caller's model is never
changed: an open set lives in the pipeline and is passed to the model's forward as ``label_embed``.

``output_format="paddleclas"`` returns PaddleClas' ``RamOutPut`` shape instead, one dict for all the inputs
(:func:`paddleclas_output`): ``{"class_ids": [[[id], ...] per image], "scores": [[[score], ...] per image],
"label_names": ["name | name | ..." per image]}``, tags in tag-index order, names in ``language`` ``"cn"``
(PaddleClas' default) or ``"en"``; an unreadable image in a list gives ``None`` in each of the three lists.
"""
import logging

from ..errors import ConfigError
from ..models.ram import model_class_for
from ..models.ram.mixed_vocabulary import mixed_vocabulary
from ..registry import MindFormerModuleType, MindFormerRegister
from ..utils.validation import check_threshold, check_top_k
from .base import Pipeline
from .defaults import DEFAULT_TAGGER

logger = logging.getLogger(__name__)
OUTPUT_FORMATS = ("list", "paddleclas")
LANGUAGES = ("en", "cn")


def check_output_options(output_format=None, language=None, where=""):
    """``(output_format, language)`` checked: a format of :data:`OUTPUT_FORMATS`, a language of :data:`LANGUAGES`
    (only with ``"paddleclas"``); None stays None."""
    if output_format is not None and output_format not in OUTPUT_FORMATS:
        raise ConfigError(f"{where}output_format: expected one of {list(OUTPUT_FORMATS)}, got {output_format!r}")
    if language is not None and language not in LANGUAGES:
        raise ConfigError(f"{where}language: expected one of {list(LANGUAGES)} (PaddleClas' RamOutPut), "
                          f"got {language!r}")
    return output_format, language


def paddleclas_output(results, language="cn"):
    """Per-image tag lists (this pipeline's default output) → PaddleClas' ``RamOutPut`` dict (module docstring)."""
    check_output_options("paddleclas", language)
    key = "label_cn" if language == "cn" else "label"
    class_ids, scores, label_names = [], [], []
    for tags in results:
        if tags is None:
            for column in (class_ids, scores, label_names):
                column.append(None)
            continue
        tags = sorted(tags, key=lambda t: t["class_id"])
        class_ids.append([[t["class_id"]] for t in tags])
        scores.append([[t["score"]] for t in tags])
        label_names.append(" | ".join(t[key] for t in tags))
    return {"class_ids": class_ids, "scores": scores, "label_names": label_names}


@MindFormerRegister.register(MindFormerModuleType.PIPELINE, alias="image_tagging")
class ImageTaggingPipeline(Pipeline):
    """Image tagging with RAM / RAM++.

    Construction options: ``open_set_tags`` (a list of distinct names, or one comma-separated string such as
    ``"go-kart, horse racing"``; the pipeline tags with that vocabulary, the model itself is left unchanged),
    ``open_set_descriptions`` (RAM++: ``{tag: [descriptions]}`` or a list parallel to the tags),
    ``open_set_threshold`` (a number in [0, 1], default 0.5), ``open_set_clip_model`` (the CLIP that embeds
    them; default ``clip_vit_b_16``) and ``extend_vocabulary`` (True: the open-set tags are *added* after the
    model's own tags, :mod:`mindram.models.ram.mixed_vocabulary`; default: they replace them, as the reference
    does). Without ``open_set_tags`` the model's current vocabulary is used.
    ``image_size`` (a multiple of the Swin patch size, default the model's, 384 for the released weights) runs
    the tagger at another input resolution (docs/ram.md#input-resolution); it sets the size of the model's own
    preprocessing (or of a dict ``image_processor``).
    Call options (also defaults at construction): ``threshold`` (a number in [0, 1] for every tag; default
    the per-tag thresholds), ``top_k`` (a positive int), ``output_format`` (``"list"``, the default, or
    ``"paddleclas"``) and ``language`` (``"cn"``/``"en"``, with ``"paddleclas"``). Returns one list per image of
    ``{'label', 'label_cn', 'score', 'class_id'}`` sorted by score (``None`` for an unreadable image in a
    list), or PaddleClas' dict (module docstring).
    """

    task = "image_tagging"
    model_types = ("RAM", "RAMPlus")
    default_model = DEFAULT_TAGGER
    model_methods = ("get_tag_scores", "vocabulary")

    def __init__(self, model=None, image_processor=None, tokenizer=None, batch_size=1, open_set_tags=None,
                 open_set_descriptions=None, open_set_threshold=None, open_set_clip_model=None,
                 extend_vocabulary=False, image_size=None, **kwargs):
        # tokenizer: unused, the tagger embeds open-set texts with its own CLIP text tower
        if image_size is not None:
            if image_processor is not None and not isinstance(image_processor, dict):
                raise ConfigError("image_size sets the size of the model's preprocessing; with an image_processor "
                                  "instance give that instance the size instead")
            image_processor = {**(image_processor or {}), "image_size": image_size}
        super().__init__(model, image_processor, tokenizer, batch_size, **kwargs)
        if extend_vocabulary and open_set_tags is None:
            raise ConfigError("extend_vocabulary=True adds open_set_tags to the model's tags; pass open_set_tags=[...]")
        self.extend_vocabulary = bool(extend_vocabulary)
        self.open_set_vocabulary = self._open_set_vocabulary(open_set_tags, open_set_descriptions,
                                                             open_set_threshold, open_set_clip_model)

    @classmethod
    def model_class(cls, name_or_path):
        """RAM or RAMPlus, by the name or the config stored with the checkpoint."""
        return model_class_for(name_or_path)

    def _open_set_vocabulary(self, tags, descriptions, threshold, clip_model):
        """The pipeline's own open-set vocabulary (the model is not changed), or None without ``open_set_tags``."""
        if tags is None:
            given = [k for k, v in (("open_set_descriptions", descriptions), ("open_set_threshold", threshold),
                                    ("open_set_clip_model", clip_model)) if v is not None]
            if given:
                raise ConfigError(f"{', '.join(given)} given without open_set_tags; pass open_set_tags=[...] "
                                  f"to tag with an open set")
            return None
        extra = {"clip_model": clip_model} if clip_model is not None else {}
        threshold = 0.5 if threshold is None else threshold
        if self.extend_vocabulary:
            return mixed_vocabulary(self.model, tags, descriptions=descriptions, threshold=threshold, **extra)
        return self.model.open_set_vocabulary(tags, descriptions=descriptions, threshold=threshold, **extra)

    def vocabulary(self):
        """The vocabulary tagged with: the open set of the construction, else a copy of the model's current one."""
        return self.open_set_vocabulary if self.open_set_vocabulary is not None else self.model.vocabulary()

    def _sanitize_parameters(self, threshold=None, top_k=None, output_format=None, language=None, **unknown):
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown option(s) {sorted(unknown)}; "
                            f"allowed: threshold, top_k, output_format, language (open_set_* only at construction)")
        post = {}
        if threshold is not None:
            post["threshold"] = check_threshold(threshold)
        if top_k is not None:
            post["top_k"] = check_top_k(top_k)
        output_format, language = check_output_options(output_format, language)
        post.update({k: v for k, v in (("output_format", output_format), ("language", language)) if v is not None})
        return {}, {}, post

    def __call__(self, inputs, batch_size=None, **kwargs):
        """Tags of one input or a list (class docstring); PaddleClas' dict with ``output_format="paddleclas"``."""
        post = self._call_parameters(kwargs)[2]
        output_format, language = post.get("output_format", "list"), post.get("language")
        if language is not None and output_format != "paddleclas":
            raise ConfigError(f"language={language!r} selects the names of output_format='paddleclas'; the default "
                              f"output has both ('label', 'label_cn')")
        results = super().__call__(inputs, batch_size=batch_size, **kwargs)
        return paddleclas_output(results, language or "cn") if output_format == "paddleclas" else results

    def preprocess(self, inputs, offset=0, strict=False, **params):
        pixels, ok = self.load_images(inputs, offset=offset, strict=strict)
        return {"pixel_values": pixels, "ok": ok}

    def _forward(self, model_inputs, **params):
        pixels, vocabulary = model_inputs["pixel_values"], self.vocabulary()
        scores = self.model.get_tag_scores(pixels, vocabulary.label_embed) if pixels is not None else None
        return {"scores": scores, "ok": model_inputs["ok"], "vocabulary": vocabulary}

    def postprocess(self, model_outputs, threshold=None, top_k=None, output_format=None, language=None):
        # output_format / language: applied to the whole call's results in __call__
        scores, vocabulary, results = model_outputs["scores"], model_outputs["vocabulary"], []
        selected = vocabulary.select(scores, threshold) if scores is not None else []
        names, names_cn = vocabulary.names, vocabulary.names_chinese
        row = 0
        for ok in model_outputs["ok"]:
            if not ok:
                results.append(None)
                continue
            tags = [{"label": names[k], "label_cn": names_cn[k], "score": float(scores[row, k]), "class_id": int(k)}
                    for k in selected[row]]
            tags.sort(key=lambda t: (-t["score"], t["class_id"]))
            results.append(tags[:top_k] if top_k else tags)
            row += 1
        return results


__all__ = ["ImageTaggingPipeline", "paddleclas_output", "check_output_options"]

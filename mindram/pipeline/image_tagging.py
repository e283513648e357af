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
"""
import logging

from ..errors import ConfigError
from ..models.ram import model_class_for
from ..registry import MindFormerModuleType, MindFormerRegister
from ..utils.validation import check_threshold, check_top_k
from .base import Pipeline

logger = logging.getLogger(__name__)
DEFAULT_TAGGER = "ram_plus_swin_l_384"


@MindFormerRegister.register(MindFormerModuleType.PIPELINE, alias="image_tagging")
class ImageTaggingPipeline(Pipeline):
    """Image tagging with RAM / RAM++.

    Construction options: ``open_set_tags`` (a list of distinct names, or one comma-separated string such as
    ``"go-kart, horse racing"``; the pipeline tags with that vocabulary, the model itself is left unchanged),
    ``open_set_descriptions`` (RAM++: ``{tag: [descriptions]}`` or a list parallel to the tags),
    ``open_set_threshold`` (a number in [0, 1], default 0.5), ``open_set_clip_model`` (the CLIP that embeds
    them; default ``clip_vit_b_16``). Without ``open_set_tags`` the model's current vocabulary is used.
    Call options (also defaults at construction): ``threshold`` (a number in [0, 1] for every tag; default
    the per-tag thresholds), ``top_k`` (a positive int). Returns one list per image of ``{'label',
    'label_cn', 'score', 'class_id'}`` sorted by score; ``None`` for an unreadable image in a list.
    """

    task = "image_tagging"
    model_types = ("RAM", "RAMPlus")
    default_model = DEFAULT_TAGGER
    model_methods = ("get_tag_scores", "vocabulary")

    def __init__(self, model=None, image_processor=None, tokenizer=None, batch_size=1, open_set_tags=None,
                 open_set_descriptions=None, open_set_threshold=None, open_set_clip_model=None, **kwargs):
        # tokenizer: unused, the tagger embeds open-set texts with its own CLIP text tower
        super().__init__(model, image_processor, tokenizer, batch_size, **kwargs)
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
        return self.model.open_set_vocabulary(tags, descriptions=descriptions,
                                              threshold=0.5 if threshold is None else threshold, **extra)

    def vocabulary(self):
        """The vocabulary tagged with: the open set of the construction, else a copy of the model's current one."""
        return self.open_set_vocabulary if self.open_set_vocabulary is not None else self.model.vocabulary()

    def _sanitize_parameters(self, threshold=None, top_k=None, **unknown):
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown option(s) {sorted(unknown)}; "
                            f"allowed: threshold, top_k (open_set_* only at construction)")
        post = {}
        if threshold is not None:
            post["threshold"] = check_threshold(threshold)
        if top_k is not None:
            post["top_k"] = check_top_k(top_k)
        return {}, {}, post

    def preprocess(self, inputs, offset=0, strict=False, **params):
        pixels, ok = self.load_images(inputs, offset=offset, strict=strict)
        return {"pixel_values": pixels, "ok": ok}

    def _forward(self, model_inputs, **params):
        pixels, vocabulary = model_inputs["pixel_values"], self.vocabulary()
        scores = self.model.get_tag_scores(pixels, vocabulary.label_embed) if pixels is not None else None
        return {"scores": scores, "ok": model_inputs["ok"], "vocabulary": vocabulary}

    def postprocess(self, model_outputs, threshold=None, top_k=None):
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


__all__ = ["ImageTaggingPipeline"]

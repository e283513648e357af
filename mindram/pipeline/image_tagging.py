"""``pipeline("image_tagging")``: RAM / RAM++ tags for images, closed-set or open-set.

    tagger = pipeline("image_tagging", model="ram_plus_swin_l_384")
    tagger("demo.jpg")   # [[{'label': 'dog', 'label_cn': '狗', 'score': 0.93, 'class_id': 1234}, ...]]
    pipeline("image_tagging", model=..., open_set_tags=["go-kart", "horse racing"],
             open_set_descriptions={"go-kart": ["a small open racing car", ...]})

Per image, the tags whose score is strictly above their threshold (the reference's ``generate_tag``
rule: per-tag thresholds from the model, or ``threshold=`` for all), minus the model's
``delete_tag_index``, sorted by score (highest first); ``top_k`` keeps the best k.
"""
import logging
import os

import numpy as np

from ..registry import MindFormerModuleType, MindFormerRegister
from .base import Pipeline, check_batch_size

logger = logging.getLogger(__name__)
DEFAULT_TAGGER = "ram_plus_swin_l_384"


def load_tagger(model):
    """A RAM/RAM++ model from a name (``ram_*``/``ram_plus_*``), a directory, a checkpoint, or an instance."""
    from ..models.ram import RAM, RAMConfig, RAMPlus
    model = DEFAULT_TAGGER if model is None else model
    if hasattr(model, "get_tag_scores") and hasattr(model, "select_tags"):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a RAM/RAM++ name, directory or checkpoint path, or a RAM/RAMPlus instance; "
                        f"got {type(model).__name__}")
    path = str(model)
    if os.path.isfile(path):
        sidecar = os.path.splitext(path)[0] + ".yaml"
        model_type = RAMConfig.from_yaml(sidecar).model_type if os.path.isfile(sidecar) else None
    else:
        model_type = RAMConfig.from_pretrained(path).model_type
    if model_type is None:
        model_type = "ram_plus" if "ram_plus" in os.path.basename(path) else "ram"
    return (RAMPlus if model_type == "ram_plus" else RAM).from_pretrained(path)


@MindFormerRegister.register(MindFormerModuleType.PIPELINE, alias="image_tagging")
class ImageTaggingPipeline(Pipeline):
    """Image tagging with RAM / RAM++.

    Construction options: ``open_set_tags`` (list of names; switches the model to that vocabulary),
    ``open_set_descriptions`` (RAM++: ``{tag: [descriptions]}``), ``open_set_threshold`` (default 0.5),
    ``open_set_clip_model`` (the CLIP that embeds them; default the model's, ``clip_vit_b_16``).
    Call options (also defaults at construction): ``threshold`` (float for every tag; default the model's
    per-tag thresholds), ``top_k``. Returns one list per image of ``{'label', 'label_cn', 'score',
    'class_id'}`` sorted by score; ``None`` for an unreadable image in a list.
    """

    task = "image_tagging"

    def __init__(self, model=None, image_processor=None, tokenizer=None, batch_size=1, open_set_tags=None,
                 open_set_descriptions=None, open_set_threshold=0.5, open_set_clip_model=None, **kwargs):
        del tokenizer  # the tagger embeds open-set texts with its own CLIP text tower
        self.model = load_tagger(model)
        self.image_processor = image_processor if image_processor is not None else self.model.image_processor
        self.batch_size = check_batch_size(batch_size)
        if open_set_tags is not None:
            extra = {"clip_model": open_set_clip_model} if open_set_clip_model is not None else {}
            self.model.set_open_set_tags(list(open_set_tags), descriptions=open_set_descriptions,
                                         threshold=open_set_threshold, **extra)
        self._defaults = self._sanitize_parameters(**kwargs)

    def _sanitize_parameters(self, threshold=None, top_k=None, **unknown):
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown option(s) {sorted(unknown)}; "
                            f"allowed: threshold, top_k (open_set_* only at construction)")
        if threshold is not None and not isinstance(threshold, (int, float, np.floating)):
            raise ValueError(f"threshold must be a number, got {threshold!r}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k <= 0):
            raise ValueError(f"top_k must be None or a positive int, got {top_k!r}")
        post = {}
        if threshold is not None:
            post["threshold"] = float(threshold)
        if top_k is not None:
            post["top_k"] = int(top_k)
        return {}, {}, post

    def preprocess(self, inputs, offset=0, strict=False, **params):
        pixels, ok = self.load_images(inputs, offset=offset, strict=strict)
        return {"pixel_values": pixels, "ok": ok}

    def _forward(self, model_inputs, **params):
        pixels = model_inputs["pixel_values"]
        scores = self.model.get_tag_scores(pixels) if pixels is not None else None
        return {"scores": scores, "ok": model_inputs["ok"]}

    def postprocess(self, model_outputs, threshold=None, top_k=None):
        scores, results = model_outputs["scores"], []
        selected = self.model.select_tags(scores, threshold) if scores is not None else []
        names, names_cn = self.model.tag_list, self.model.tag_list_chinese
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


__all__ = ["ImageTaggingPipeline", "load_tagger"]

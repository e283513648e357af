"""``pipeline("feature_extraction")``: CLIP image and text embeddings as numpy arrays.

``fe(images=...)`` → ``(N, D)`` image embeddings, ``fe(texts=[...])`` → ``(N, D)`` text embeddings, both
→ ``(image_embeddings, text_embeddings)``. ``normalize=True`` (default) L2-normalises each row, so that a
dot product is the cosine similarity CLIP is trained with; ``normalize=False`` gives the raw projected
features of ``get_image_features``/``get_text_features``. Rows follow the input order; an unreadable
image raises (naming its index and path), because an array cannot hold a gap — use
:func:`mindram.embeddings.write_embeddings` to skip and report bad items in bulk work.
"""
import numpy as np

from ..errors import DataError
from ..models.clip.zero_shot import encode_in_batches, l2_normalize, tokenize_with
from ..registry import MindFormerModuleType, MindFormerRegister
from ..utils.validation import check_batch_size
from .defaults import DEFAULT_CLIP
from .base import ITEM_ERRORS, Pipeline, as_items, describe


@MindFormerRegister.register(MindFormerModuleType.PIPELINE, alias="feature_extraction")
class FeatureExtractionPipeline(Pipeline):
    """Image/text embeddings; option ``normalize`` (default True) at construction or per call."""

    task = "feature_extraction"
    model_types = ("CLIPModel",)
    default_model = DEFAULT_CLIP
    model_methods = ("get_image_features", "get_text_features")

    def __init__(self, model=None, image_processor=None, tokenizer=None, batch_size=8, **kwargs):
        kwargs.setdefault("normalize", True)
        super().__init__(model, image_processor, tokenizer, batch_size, **kwargs)

    def _sanitize_parameters(self, normalize=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unknown option(s) {sorted(kwargs)}; "
                            "allowed: images, texts, normalize, batch_size")
        return {}, {}, ({} if normalize is None else {"normalize": bool(normalize)})

    def preprocess(self, inputs, offset=0, strict=True, kind="image"):
        if kind == "text":
            if not all(isinstance(t, str) for t in inputs):
                bad = next(i for i, t in enumerate(inputs) if not isinstance(t, str))
                raise TypeError(f"texts must be strings; item {offset + bad} is {type(inputs[bad]).__name__}")
            return {"kind": kind, "input_ids": tokenize_with(self.tokenizer, inputs, self.model.context_length)}
        arrays = []
        for i, item in enumerate(inputs):
            try:
                arrays.append(self.image_processor.preprocess(item))
            except ITEM_ERRORS as e:
                if strict:  # a single input: its own error
                    raise
                raise DataError(f"feature_extraction: input {offset + i} ({describe(item)}) cannot be used: "
                                f"{type(e).__name__}: {e}") from e
        return {"kind": kind, "pixel_values": np.stack(arrays)}

    def _forward(self, model_inputs):
        if model_inputs["kind"] == "text":
            return encode_in_batches(self.model.get_text_features, model_inputs["input_ids"], self.batch_size)
        return encode_in_batches(self.model.get_image_features, model_inputs["pixel_values"], self.batch_size)

    def postprocess(self, model_outputs, normalize=True):
        return l2_normalize(model_outputs) if normalize else model_outputs

    def _run(self, inputs, kind, batch_size, forward, post):
        single, items = (True, [inputs]) if kind == "text" and isinstance(inputs, str) else as_items(inputs)
        if not items:
            raise DataError(f"feature_extraction: empty {kind} list; pass at least one {kind}")
        parts = []
        for start in range(0, len(items), batch_size):
            model_inputs = self.preprocess(items[start:start + batch_size], offset=start,
                                           strict=single, kind=kind)
            parts.append(self.postprocess(self._forward(model_inputs, **forward), **post))
        return np.concatenate(parts)

    def __call__(self, inputs=None, images=None, texts=None, batch_size=None, **kwargs):
        """Embeddings of ``images`` (or the positional ``inputs``) and/or ``texts``; see the module docstring."""
        if inputs is not None:
            if images is not None:
                raise TypeError("pass the images either positionally or as images=, not both")
            images = inputs
        if images is None and texts is None:
            raise TypeError("feature_extraction needs images=... and/or texts=...")
        _, forward, post = self._call_parameters(kwargs)
        batch_size = self.batch_size if batch_size is None else check_batch_size(batch_size)
        out = [self._run(x, kind, batch_size, forward, post)
               for x, kind in ((images, "image"), (texts, "text")) if x is not None]
        return tuple(out) if len(out) == 2 else out[0]

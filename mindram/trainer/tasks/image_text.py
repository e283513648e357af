"""Base of the tasks on an image–text dual encoder (CLIP, or any registered family with the same interface:
``model(pixel_values, input_ids) -> (logits_per_image, logits_per_text)``, ``get_image_features``,
``get_text_features``, ``context_length``): (image, caption) batches, the contrastive loss, the text side."""
import functools

from ...data import build_clip_dataset
from ...losses import CLIPWithLoss
from ...models.clip.zero_shot import tokenize_with
from .base import BaseTrainer


class ImageTextTrainer(BaseTrainer):
    """(image, caption) data through :func:`~mindram.data.build_clip_dataset` with the run config's (else the
    model's) image processor and tokenizer; training loss :class:`~mindram.losses.CLIPWithLoss`."""

    default_arch = "CLIPModel"

    @property
    def context_length(self):
        """Token length: ``processor.context_length``, else the model's."""
        return int((self.config.get("processor") or {}).get("context_length") or self.model.context_length)

    def text_tokenizer(self):
        """``f(texts, context_length=L) -> int32 (N, L)`` with :meth:`tokenizer`."""
        return functools.partial(tokenize_with, self.tokenizer())

    def dataset(self, section, batch_size, shuffle, start_epoch=0, start_step=0, train_transform=False,
                drop_remainder=True, return_index=False, substitute_unreadable=True):
        """The batched pipeline over ``section``'s source: training substitutes an unreadable image by the next
        readable one; evaluation passes ``substitute_unreadable=False`` and drops the rows flagged
        ``readable=False``."""
        cfg = self.config.get(section) or {}
        return build_clip_dataset(self.source(section), self.image_processor(), self.text_tokenizer(),
                                  batch_size=batch_size, shuffle=cfg.get("shuffle", shuffle),
                                  num_workers=cfg.get("num_workers", self.args.num_workers),
                                  drop_remainder=drop_remainder, seed=self.args.seed,
                                  context_length=self.context_length, train_transform=train_transform,
                                  start_epoch=start_epoch, start_step=start_step, return_index=return_index,
                                  substitute_unreadable=substitute_unreadable)

    def network_with_loss(self):
        return CLIPWithLoss(self.model)

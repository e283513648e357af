"""Symmetric contrastive loss of CLIP (open_clip ``ClipLoss``), apart from the model."""
import mindspore as ms
from mindspore import nn, ops


class ClipLoss(nn.Cell):
    """mean(CE(logits_per_image, arange(N)), CE(logits_per_text, arange(N))).

    Call with the model's output tuple ``loss((logits_per_image, logits_per_text))`` or with the two
    logits as arguments. Single-device ("local") loss; the features of other devices are not gathered.
    """

    def __init__(self):
        super().__init__()
        self.cross_entropy = nn.CrossEntropyLoss(reduction="mean")

    def construct(self, logits_per_image, logits_per_text=None):
        if logits_per_text is None:
            logits_per_image, logits_per_text = logits_per_image
        labels = ops.arange(0, logits_per_image.shape[0], dtype=ms.int32)
        return (self.cross_entropy(logits_per_image, labels) + self.cross_entropy(logits_per_text, labels)) / 2


class CLIPWithLoss(nn.Cell):
    """Joins a CLIP model and :class:`ClipLoss` into one cell (the task cell used for training).

    ``auto_prefix=False`` keeps the model's parameter names unchanged (no ``model.`` prefix), so
    checkpoints written during training load into a bare model.
    """

    def __init__(self, model, loss=None):
        super().__init__(auto_prefix=False)
        self.model = model
        self.loss = loss if loss is not None else ClipLoss()

    def construct(self, pixel_values, input_ids):
        return self.loss(self.model(pixel_values, input_ids))

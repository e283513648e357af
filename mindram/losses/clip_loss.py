"""Symmetric contrastive loss of CLIP (open_clip ``ClipLoss``), apart from the model, local or over the global
batch of a data-parallel job."""
import mindspore as ms
from mindspore import nn, ops

from ..models.clip.modeling import l2_normalize
from ..parallel.collectives import GatherRows


class ClipLoss(nn.Cell):
    """mean(CE(logits_per_image, labels), CE(logits_per_text, labels)) — open_clip's ``ClipLoss``.

    Single device (``world_size`` 1): call with the model's output ``loss((logits_per_image, logits_per_text))``
    or the two logits; labels are ``arange(N)``.

    Data parallel (``world_size`` > 1, after ``mindspore.communication.init``): call with normalised features
    and the scale, ``loss(image_features, text_features, logit_scale)`` (``logit_scale`` already exponentiated),
    each rank passing its own ``n`` rows. Image and text features are all-gathered (rank order) so that the
    logits cover the global batch of ``world_size * n`` pairs, with open_clip's semantics:

    * ``local_loss=False``: every rank computes the global ``(W n, W n)`` logits, i.e. the loss of the whole
      global batch; ``local_loss=True``: only its own ``n`` rows against the ``W n`` columns, labels
      ``arange(n) + n * rank`` (same mean over ranks, ``1/W`` of the logits memory).
    * ``gather_with_grad=True``: the gathered features are differentiated (their gradient is summed over the
      ranks), so after the data-parallel gradient *mean* the update equals a one-device step on the global batch;
      ``False``: the gather is a constant and the gradient reaches a rank's features through its own rows only
      (open_clip's default; without ``local_loss`` the mean gradient is then ``1/W`` of the global one).
    """

    def __init__(self, local_loss=False, gather_with_grad=False, rank=0, world_size=1, group=None):
        super().__init__()
        self.cross_entropy = nn.CrossEntropyLoss(reduction="mean")
        self.gather_over_ranks(rank, world_size, local_loss, gather_with_grad, group)

    def gather_over_ranks(self, rank, world_size, local_loss=False, gather_with_grad=False, group=None):
        """Compute the loss over the global batch of ``world_size`` ranks (before the first call)."""
        if not 0 <= int(rank) < int(world_size):
            raise ValueError(f"ClipLoss: rank {rank} is not in [0, world_size={world_size})")
        self.local_loss, self.gather_with_grad = bool(local_loss), bool(gather_with_grad)
        self.rank, self.world_size = int(rank), int(world_size)
        self.distributed = self.world_size > 1
        if self.distributed:
            keep_local = not self.local_loss
            self.gather = GatherRows(self.rank, self.world_size, self.gather_with_grad, keep_local, group)

    def _symmetric(self, logits_per_image, logits_per_text, labels):
        return (self.cross_entropy(logits_per_image, labels) + self.cross_entropy(logits_per_text, labels)) / 2

    def construct(self, logits_per_image, logits_per_text=None, logit_scale=None):
        if logit_scale is not None:
            return self.features_loss(logits_per_image, logits_per_text, logit_scale)
        if logits_per_text is None:
            logits_per_image, logits_per_text = logits_per_image
        labels = ops.arange(0, logits_per_image.shape[0], dtype=ms.int32)
        return self._symmetric(logits_per_image, logits_per_text, labels)

    def features_loss(self, image_features, text_features, logit_scale):
        """The loss of normalised features ``(n, D)`` with the (exponentiated) ``logit_scale``."""
        rows = image_features.shape[0]
        if not self.distributed:
            logits = logit_scale * ops.matmul(image_features, text_features.T)
            return self._symmetric(logits, logits.T, ops.arange(0, rows, dtype=ms.int32))
        all_image = self.gather(image_features)
        all_text = self.gather(text_features)
        if self.local_loss:
            logits_per_image = logit_scale * ops.matmul(image_features, all_text.T)
            logits_per_text = logit_scale * ops.matmul(text_features, all_image.T)
            labels = ops.arange(0, rows, dtype=ms.int32) + rows * self.rank
            return self._symmetric(logits_per_image, logits_per_text, labels)
        logits = logit_scale * ops.matmul(all_image, all_text.T)
        return self._symmetric(logits, logits.T, ops.arange(0, rows * self.world_size, dtype=ms.int32))


class CLIPWithLoss(nn.Cell):
    """Joins a CLIP model and :class:`ClipLoss` into one cell (the task cell used for training).

    ``auto_prefix=False`` keeps the model's parameter names unchanged (no ``model.`` prefix), so
    checkpoints written during training load into a bare model. After :meth:`gather_over_ranks` (a
    data-parallel job, see ``mindram.parallel.distribute_network``) the model's towers are called directly
    (``visual``, ``text``, ``logit_scale``: the layout of :class:`~mindram.models.clip.CLIPModel`) and the
    normalised features go to the loss, which gathers them over the ranks.
    """

    def __init__(self, model, loss=None):
        super().__init__(auto_prefix=False)
        self.model = model
        self.loss = loss if loss is not None else ClipLoss()
        self.gathered = False

    def gather_over_ranks(self, rank, world_size, **options):
        """Make the loss cover the global batch of ``world_size`` ranks (``options``: ``local_loss``,
        ``gather_with_grad``; see :class:`ClipLoss`)."""
        missing = [name for name in ("visual", "text", "logit_scale") if not hasattr(self.model, name)]
        if missing:
            raise ValueError(f"the gathered ClipLoss needs a dual encoder with visual, text and logit_scale; "
                             f"{type(self.model).__name__} lacks {', '.join(missing)}")
        self.loss.gather_over_ranks(rank, world_size, **options)
        self.gathered = bool(self.loss.distributed)

    def construct(self, pixel_values, input_ids):
        if self.gathered:
            image = l2_normalize(self.model.visual(pixel_values))
            text = l2_normalize(self.model.text(input_ids))
            return self.loss(image, text, ops.exp(self.model.logit_scale))
        return self.loss(self.model(pixel_values, input_ids))

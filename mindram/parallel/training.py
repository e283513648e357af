"""What a data-parallel training step adds to a one-device step: the gradient mean over the ranks, the loss
mean for reporting, and the network's own data-parallel parts (a loss over the global batch)."""
import logging

import mindspore as ms
from mindspore import nn, ops

from .context import world

logger = logging.getLogger(__name__)

__all__ = ["LossMean", "distribute_network", "grad_reducer"]


def _data_parallel_active() -> bool:
    return world().distributed and ms.get_auto_parallel_context("parallel_mode") == ms.ParallelMode.DATA_PARALLEL


def grad_reducer(parameters):
    """MindSpore's ``DistributedGradReducer`` over ``parameters`` (mean or sum as ``parallel.gradients_mean``)
    in a data-parallel job, else None (one device: nothing to reduce)."""
    if not _data_parallel_active():
        return None
    mean = ms.get_auto_parallel_context("gradients_mean")
    return nn.DistributedGradReducer(parameters, mean, world().world_size)


class LossMean(nn.Cell):
    """The mean of a scalar loss over the ranks (what the training log reports: the global batch's loss)."""

    def __init__(self, world_size):
        super().__init__()
        self.all_reduce = ops.AllReduce(ops.ReduceOp.SUM)
        self.world_size = float(world_size)

    def construct(self, loss):
        return self.all_reduce(ops.stop_gradient(loss)) / self.world_size


def loss_mean():
    """A :class:`LossMean` in a data-parallel job, else None."""
    return LossMean(world().world_size) if _data_parallel_active() else None


def distribute_network(network, **options):
    """Give a training network its data-parallel parts: ``network.gather_over_ranks(rank, world_size,
    **options)`` when the job is data-parallel and the network has that hook
    (:class:`~mindram.losses.CLIPWithLoss` gathers the features for a global-batch loss with ``options``
    ``local_loss`` / ``gather_with_grad``); a network without it (the tagging loss) trains plain data-parallel.
    Returns ``network``. (Not named ``set_data_parallel``: every MindSpore cell has that sharding setter.)"""
    place = world()
    if place.distributed and hasattr(network, "gather_over_ranks"):
        network.gather_over_ranks(place.rank, place.world_size, **options)
        logger.info("%s: loss over the global batch of %d ranks (%s)", type(network).__name__, place.world_size,
                    ", ".join(f"{k}={v}" for k, v in options.items()))
    return network

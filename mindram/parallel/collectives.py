"""Collectives the data-parallel losses need, on MindSpore's communication stack (HCCL, NCCL or the CPU backend).

``GatherRows`` all-gathers a per-rank batch along its first axis (rank order), as open_clip's ``gather_features``
does for one tensor:

* ``with_grad=True`` (open_clip ``gather_with_grad``, ``torch.distributed.nn.all_gather``): the gradient of the
  gathered tensor is summed over the ranks (an ``AllReduce``) and each rank keeps its own rows, so every rank's
  loss terms reach the features they were computed from.
* ``with_grad=False``: the gathered tensor is a constant; with ``keep_local_grad`` the rank's own rows are the
  live local tensor (open_clip without ``local_loss``), so the gradient still reaches the local shard through
  its own rows.

The backward is written here (``AllReduce`` + slice) instead of taking ``AllGather``'s registered bprop: that one
uses ``ReduceScatter`` and divides by the rank count whenever the parallel context has ``gradients_mean`` set,
which would make the result depend on a global setting; ``AllReduce`` is also what every backend, the CPU one
included, implements.
"""
from mindspore import nn, ops
from mindspore.communication import GlobalComm

__all__ = ["GatherRows"]


class _AllGatherSummedGrad(nn.Cell):
    """``AllGather`` whose gradient is the rank's rows of the ``AllReduce``-summed output gradient."""

    def __init__(self, rank, world_size, group):
        super().__init__()
        self.rank, self.world_size = int(rank), int(world_size)
        self.all_gather = ops.AllGather(group)
        self.all_reduce = ops.AllReduce(ops.ReduceOp.SUM, group)

    def construct(self, x):
        return self.all_gather(x)

    def bprop(self, x, out, dout):
        rows = x.shape[0]
        summed = self.all_reduce(dout)
        return (summed[self.rank * rows:(self.rank + 1) * rows],)


class GatherRows(nn.Cell):
    """``(n, ...)`` on each of ``world_size`` ranks → ``(world_size * n, ...)``, rank ``r``'s rows at ``r * n``.

    Args:
        rank, world_size: this process's rank and the size of ``group``.
        with_grad: differentiate through the gather (see the module docstring).
        keep_local_grad: without ``with_grad``, put the live local tensor at this rank's rows.
        group: the communication group (default: all ranks).
    """

    def __init__(self, rank, world_size, with_grad=False, keep_local_grad=True, group=None):
        super().__init__()
        group = group or GlobalComm.WORLD_COMM_GROUP
        self.rank, self.world_size = int(rank), int(world_size)
        self.with_grad, self.keep_local_grad = bool(with_grad), bool(keep_local_grad)
        self.gather = _AllGatherSummedGrad(rank, world_size, group) if with_grad else ops.AllGather(group)

    def construct(self, x):
        gathered = self.gather(x)
        if self.with_grad:
            return gathered
        gathered = ops.stop_gradient(gathered)
        if not self.keep_local_grad:
            return gathered
        rows = x.shape[0]
        parts = ()
        for r in range(self.world_size):
            part = x if r == self.rank else gathered[r * rows:(r + 1) * rows]
            parts = parts + (part,)
        return ops.concat(parts, axis=0)


"""Seeded, resumable sample order for ``mindspore.dataset.GeneratorDataset``.

Every epoch has the same length (MindSpore fixes a generator's length once), its order is a pure function of
``(seed, epoch)``, and the sampler yields *codes* ``epoch * num_items + index`` so that the pipeline workers
know the epoch of each sample (per-sample augmentation is seeded from (seed, epoch, index)). Mid-epoch resume
is done by MindSpore's ``Dataset.set_init_step`` on top of this sampler (``mindram/data/assembly.py``).

Data parallel (``num_shards``/``shard_id``, as ``mindspore.dataset``'s samplers spell them): every rank computes
the same global order and reads the disjoint shard ``order[shard_id::num_shards]`` of it (MindSpore's
``DistributedSampler`` interleaving). An epoch is cut to whole *global* batches (``num_shards * batch_size``), so
step ``k`` of every rank together reads exactly the ``num_shards * batch_size`` samples that step ``k`` of a
one-rank run with batch ``num_shards * batch_size`` reads (in another arrangement over the ranks, which a loss
that is a mean over the global batch does not see). The data position of a run is therefore counted in global
batches: resuming with any number of ranks is exact as long as ``num_shards * batch_size`` is unchanged.
:func:`shard_pipelines` makes every pipeline planned inside it read its shard (the trainer wraps the training
pipeline in it; evaluation reads everything on every rank).
"""
import contextlib
import contextvars
from typing import Tuple

import numpy as np

from ..errors import ConfigError

__all__ = ["ResumableSampler", "current_shard", "shard_pipelines", "steps_per_epoch"]

_SHARD = contextvars.ContextVar("mindram_data_shard", default=(1, 0))


@contextlib.contextmanager
def shard_pipelines(num_shards: int, shard_id: int):
    """Pipelines planned inside this block read shard ``shard_id`` of ``num_shards`` of their global order."""
    if not 0 <= int(shard_id) < int(num_shards):
        raise ConfigError(f"shard_id {shard_id} is not in [0, num_shards={num_shards})")
    token = _SHARD.set((int(num_shards), int(shard_id)))
    try:
        yield
    finally:
        _SHARD.reset(token)


def current_shard() -> Tuple[int, int]:
    """``(num_shards, shard_id)`` in effect (``(1, 0)`` outside :func:`shard_pipelines`)."""
    return _SHARD.get()


def steps_per_epoch(num_items: int, batch_size: int, drop_remainder: bool = True) -> int:
    """Batches in one epoch of ``num_items`` samples."""
    return num_items // batch_size if drop_remainder else -(-num_items // batch_size)


class ResumableSampler:
    """Per-epoch seeded permutation (or identity order when ``shuffle`` is False) of ``range(num_items)``.

    Args:
        num_items: length of the source.
        batch_size: only used with ``drop_remainder`` to drop the tail that would not fill a batch *before*
            any sample of it is loaded (the dropped samples differ from epoch to epoch when shuffling).
        shuffle, seed: order of epoch ``e`` is ``default_rng(SeedSequence([seed, e])).permutation(num_items)``.
        drop_remainder: see ``batch_size``.
        start_epoch: the epoch that the first iteration yields; each further ``iter()`` yields the next epoch.
        num_shards, shard_id: yield only shard ``shard_id`` of the global order (module docstring); the epoch is
            cut to whole global batches of ``num_shards * batch_size`` (``drop_remainder`` is then required).

    MindSpore deep-copies the sampler for every iterator it creates, so each iterator starts again at
    ``start_epoch`` (call :meth:`set_epoch` before creating an iterator to start elsewhere).
    """

    def __init__(self, num_items: int, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_remainder: bool = True, start_epoch: int = 0, num_shards: int = 1, shard_id: int = 0):
        if num_items <= 0:
            raise ConfigError(f"cannot sample from an empty source (num_items={num_items})")
        if not 0 <= int(shard_id) < int(num_shards):
            raise ConfigError(f"shard_id {shard_id} is not in [0, num_shards={num_shards})")
        if num_shards > 1 and not drop_remainder:
            raise ConfigError("a sharded sampler needs drop_remainder=True (every rank reads whole batches)")
        self.num_items, self.batch_size = int(num_items), int(batch_size)
        self.shuffle, self.seed, self.drop_remainder = bool(shuffle), int(seed), bool(drop_remainder)
        self.num_shards, self.shard_id = int(num_shards), int(shard_id)
        global_batch = self.batch_size * self.num_shards
        self.global_samples_per_epoch = steps_per_epoch(num_items, global_batch, drop_remainder) * global_batch \
            if drop_remainder else self.num_items
        if self.global_samples_per_epoch == 0:
            raise ConfigError(f"batch_size {batch_size} x {num_shards} shard(s) > {num_items} items with "
                              "drop_remainder=True: no batch")
        self.samples_per_epoch = self.global_samples_per_epoch // self.num_shards   # what this shard yields
        self.epoch = int(start_epoch)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration yield ``epoch``."""
        self.epoch = int(epoch)

    def global_order(self, epoch: int) -> np.ndarray:
        """Source indices of ``epoch`` over all shards (``global_samples_per_epoch`` of them)."""
        if self.shuffle:
            idx = np.random.default_rng(np.random.SeedSequence([self.seed, int(epoch)])).permutation(self.num_items)
        else:
            idx = np.arange(self.num_items)
        return idx[:self.global_samples_per_epoch]

    def order(self, epoch: int) -> np.ndarray:
        """Source indices of ``epoch`` that this shard yields, in pipeline order (``samples_per_epoch``)."""
        return self.global_order(epoch)[self.shard_id::self.num_shards]

    def decode(self, code: int) -> Tuple[int, int]:
        """``(epoch, index)`` of a code yielded by the sampler."""
        return divmod(int(code), self.num_items)

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        base = epoch * self.num_items
        for index in self.order(epoch).tolist():
            yield base + index

    def __len__(self) -> int:
        return self.samples_per_epoch

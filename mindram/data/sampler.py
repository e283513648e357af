"""Seeded, resumable sample order for ``mindspore.dataset.GeneratorDataset``.

Every epoch has the same length (MindSpore fixes a generator's length once), its order is a pure function of
``(seed, epoch)``, and the sampler yields *codes* ``epoch * num_items + index`` so that the pipeline workers
know the epoch of each sample (per-sample augmentation is seeded from (seed, epoch, index)). Mid-epoch resume
is done by MindSpore's ``Dataset.set_init_step`` on top of this sampler (``mindram/data/assembly.py``).
"""
from typing import Tuple

import numpy as np

from ..errors import ConfigError

__all__ = ["ResumableSampler", "steps_per_epoch"]


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

    MindSpore deep-copies the sampler for every iterator it creates, so each iterator starts again at
    ``start_epoch`` (call :meth:`set_epoch` before creating an iterator to start elsewhere).
    """

    def __init__(self, num_items: int, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_remainder: bool = True, start_epoch: int = 0):
        if num_items <= 0:
            raise ConfigError(f"cannot sample from an empty source (num_items={num_items})")
        self.num_items, self.batch_size = int(num_items), int(batch_size)
        self.shuffle, self.seed, self.drop_remainder = bool(shuffle), int(seed), bool(drop_remainder)
        self.samples_per_epoch = steps_per_epoch(num_items, batch_size, drop_remainder) * batch_size \
            if drop_remainder else self.num_items
        if self.samples_per_epoch == 0:
            raise ConfigError(f"batch_size {batch_size} > {num_items} items with drop_remainder=True: no batch")
        self.epoch = int(start_epoch)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration yield ``epoch``."""
        self.epoch = int(epoch)

    def order(self, epoch: int) -> np.ndarray:
        """Source indices of ``epoch`` in pipeline order (``samples_per_epoch`` of them)."""
        if self.shuffle:
            idx = np.random.default_rng(np.random.SeedSequence([self.seed, int(epoch)])).permutation(self.num_items)
        else:
            idx = np.arange(self.num_items)
        return idx[:self.samples_per_epoch]

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

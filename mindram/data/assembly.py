"""Assembly of the batched, resumable ``mindspore.dataset`` pipelines, shared by every dataset builder
(:func:`~mindram.data.build_clip_dataset`, :func:`~mindram.data.build_tagging_dataset`)::

    GeneratorDataset(codes, sampler=ResumableSampler)       # the sampler's codes only (epoch * n + index)
      .map(loader, num_parallel_workers=W)                  # decode + preprocess (+ tokenise) in the workers
      .batch(B, drop_remainder)
      .set_init_step(k)                                     # resume at step k of the first epoch

A builder calls :func:`plan_pipeline` (checks the common arguments, plans the sampler and the resume point),
builds its loader (the ``map`` operation: sampler code → tuple of numpy columns) from the plan, then
:func:`assemble_pipeline`. Why the work runs in ``map`` and not in ``GeneratorDataset`` workers: see
``mindram/data/builder.py``.
"""
import dataclasses
import logging
import os

import mindspore.dataset as msds
import numpy as np

from ..errors import DataError
from ..utils.validation import check_int
from .sampler import ResumableSampler, current_shard, steps_per_epoch

logger = logging.getLogger(__name__)

__all__ = ["PipelinePlan", "assemble_pipeline", "plan_pipeline"]


@dataclasses.dataclass(frozen=True)
class PipelinePlan:
    """The checked common arguments of one pipeline and its resume point (from :func:`plan_pipeline`).

    ``start_epoch``/``start_step``: the resume point with a ``start_step`` beyond one epoch folded into
    ``start_epoch``; ``first_epoch_items``: the samples the first (partial) epoch loads — with MindSpore's fast
    recovery (its default) the skipped samples are never loaded.
    """

    sampler: ResumableSampler
    batch_size: int
    num_workers: int
    seed: int
    drop_remainder: bool
    start_epoch: int
    start_step: int
    first_epoch_items: int

    @property
    def num_items(self) -> int:
        return self.sampler.num_items

    @property
    def steps_per_epoch(self) -> int:
        return len(self.sampler) // self.batch_size if self.drop_remainder else \
            steps_per_epoch(self.num_items, self.batch_size, False)

    def describe(self) -> str:
        """One log phrase: records, steps per epoch, resume point, workers."""
        shard = "" if self.sampler.num_shards == 1 else \
            f" (shard {self.sampler.shard_id} of {self.sampler.num_shards})"
        return (f"{self.num_items} records{shard}, {self.steps_per_epoch} steps/epoch of {self.batch_size}, "
                f"starting at epoch {self.start_epoch} step {self.start_step}, {self.num_workers} worker(s)")


def plan_pipeline(source, batch_size: int, shuffle: bool, num_workers: int, drop_remainder: bool, seed: int,
                  start_epoch: int = 0, start_step: int = 0) -> PipelinePlan:
    """Check the common arguments (``ConfigError`` naming the bad one; ``DataError`` for an empty source or
    one too small for a batch) and plan the seeded sampler and the resume point over ``source``.

    ``num_workers`` above the CPU count is reduced to it (``mindspore.dataset`` rejects more). Inside
    :func:`~mindram.data.sampler.shard_pipelines` the plan reads its shard of the global order and ``batch_size``
    is per shard."""
    batch_size = check_int(batch_size, "batch_size", 1)
    num_workers = check_int(num_workers, "num_workers", 1)
    if num_workers > (os.cpu_count() or 1):
        logger.info("num_workers=%d reduced to the %d available CPU(s)", num_workers, os.cpu_count() or 1)
        num_workers = os.cpu_count() or 1
    seed = check_int(seed, "seed", 0)
    start_epoch = check_int(start_epoch, "start_epoch", 0)
    start_step = check_int(start_step, "start_step", 0)
    n = len(source)
    if n == 0:
        raise DataError(f"{type(source).__name__} has no records")
    num_shards, shard_id = current_shard()
    steps = steps_per_epoch(n, batch_size * num_shards, drop_remainder)
    if steps == 0:
        shards = f" x {num_shards} shards" if num_shards > 1 else ""
        raise DataError(f"{type(source).__name__} has {n} records, fewer than batch_size={batch_size}{shards} "
                        "(drop_remainder=True would yield no batch)")
    start_epoch, start_step = start_epoch + start_step // steps, start_step % steps
    sampler = ResumableSampler(n, batch_size, shuffle, seed, drop_remainder, start_epoch, num_shards, shard_id)
    skipped = min(start_step * batch_size, sampler.samples_per_epoch)
    first_items = sampler.samples_per_epoch - skipped if msds.config.get_fast_recovery() else \
        sampler.samples_per_epoch
    return PipelinePlan(sampler, batch_size, num_workers, seed, bool(drop_remainder), start_epoch, start_step,
                        first_items)


class _Codes:
    """Random-access generator source that passes the sampler's codes through (loading happens in ``map``)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, code) -> tuple:
        return (np.asarray(code, np.int64),)


def assemble_pipeline(loader, columns, plan: PipelinePlan, python_multiprocessing: bool = False) -> msds.Dataset:
    """The batched dataset of ``plan`` whose rows are ``loader(code)`` with names ``columns``, resumed at
    ``plan.start_step``; ``python_multiprocessing`` runs the loader in worker processes instead of threads."""
    dataset = msds.GeneratorDataset(_Codes(plan.num_items), column_names=["code"], sampler=plan.sampler,
                                    num_parallel_workers=1, python_multiprocessing=False)
    dataset = dataset.map(operations=loader, input_columns=["code"], output_columns=list(columns),
                          num_parallel_workers=plan.num_workers, python_multiprocessing=python_multiprocessing)
    dataset = dataset.batch(plan.batch_size, drop_remainder=plan.drop_remainder)
    if plan.start_step:
        dataset.set_init_step(plan.start_step)
    return dataset

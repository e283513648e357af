"""Data-parallel runs on MindSpore's own distributed stack, configured as MindFormers spells it.

Run-config keys (all optional; without ``use_parallel`` a run is single-process and none of this is touched)::

    use_parallel: true            # or run_mindformer.py --use_parallel True, under msrun
    parallel:                     # MindSpore's auto-parallel context (MindFormers' ``parallel`` section)
      parallel_mode: 0            # 0 / data_parallel: the only mode a mindram model supports
      gradients_mean: true        # mean (not sum) of the ranks' gradients
      enable_parallel_optimizer: false   # optimizer-state sharding: refused (below)
    parallel_config:              # MindFormers' parallel_config
      data_parallel: 2            # must equal the number of ranks msrun starts (default: that number)
      model_parallel: 1           # tensor/pipeline parallelism: not supported (1 only)
      pipeline_stage: 1

:func:`init_parallel` initialises the communication (``mindspore.communication.init``: HCCL on Ascend, NCCL on
GPU, the CPU collective backend on CPU) and sets ``ParallelMode.DATA_PARALLEL``; every process runs the same
program, rank 0 writes the outputs. How a global batch is split and why N ranks × b equal one device × N·b: see
``mindram/data/sampler.py`` and :class:`~mindram.losses.ClipLoss`.

``enable_parallel_optimizer: true`` is refused: MindSpore's parallel optimizer shards the optimizer moments over
the ranks and, in data-parallel mode, exists on Ascend only (MindSpore 2.10 raises "parallel optimizer only
supports Ascend in data parallel mode" on CPU/GPU); mindram's checkpoints are written by rank 0 alone and would
hold one shard of the moments, so resume could not be exact.
"""
import dataclasses
import logging
import os
from typing import Optional

import mindspore as ms

from ..errors import ConfigError
from ..models.configuration_utils import BaseConfig

logger = logging.getLogger(__name__)

__all__ = ["DataParallel", "ParallelSettings", "init_parallel", "parallel_settings", "world"]

PARALLEL_KEYS = {"parallel_mode", "gradients_mean", "enable_parallel_optimizer"}
PARALLEL_CONFIG_KEYS = {"data_parallel", "model_parallel", "pipeline_stage"}
_DATA_PARALLEL_MODES = (0, "data_parallel", "DATA_PARALLEL")


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """This process's place in the job: ``rank`` of ``world_size`` (``0`` of ``1`` when not parallel)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs and metrics."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@dataclasses.dataclass
class ParallelSettings(BaseConfig):
    """The checked ``use_parallel``, ``parallel`` and ``parallel_config`` keys of a run config."""

    use_parallel: bool = False
    parallel_mode: object = 0
    gradients_mean: bool = True
    enable_parallel_optimizer: bool = False
    data_parallel: Optional[int] = None
    model_parallel: int = 1
    pipeline_stage: int = 1

    def validate(self):
        if self.parallel_mode not in _DATA_PARALLEL_MODES:
            raise ConfigError(f"parallel.parallel_mode: {self.parallel_mode!r} is not supported; mindram models "
                              f"train data-parallel only (0 or data_parallel)")
        for key in ("model_parallel", "pipeline_stage"):
            if getattr(self, key) != 1:
                raise ConfigError(f"parallel_config.{key}: {getattr(self, key)} is not supported; mindram models "
                                  f"train data-parallel only ({key}: 1)")
        if self.enable_parallel_optimizer:
            raise ConfigError("parallel.enable_parallel_optimizer: true is not supported: MindSpore's parallel "
                              "optimizer (Ascend only in data-parallel mode) shards the optimizer moments, which "
                              "mindram's rank-0 checkpoints cannot hold; set it to false")
        if self.data_parallel is not None and self.data_parallel < 1:
            raise ConfigError(f"parallel_config.data_parallel: expected >= 1, got {self.data_parallel}")


def _section(config, name, allowed):
    data = config.get(name) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a mapping, got {data!r}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return dict(data)


def parallel_settings(config) -> ParallelSettings:
    """The :class:`ParallelSettings` of a run config (ConfigError naming a bad key or value)."""
    values = {**_section(config, "parallel", PARALLEL_KEYS), **_section(config, "parallel_config",
                                                                         PARALLEL_CONFIG_KEYS)}
    values["use_parallel"] = config.get("use_parallel") or False
    try:
        return ParallelSettings.from_dict(values)
    except ConfigError as e:
        raise ConfigError(f"parallel settings: {e}") from e


_ACTIVE = {"world": DataParallel()}


def world() -> DataParallel:
    """This process's :class:`DataParallel` (rank 0 of 1 until :func:`init_parallel` ran with ``use_parallel``)."""
    return _ACTIVE["world"]


def _launched_by_msrun() -> bool:
    return bool(os.environ.get("MS_ROLE") and os.environ.get("MS_WORKER_NUM"))


def init_parallel(settings: ParallelSettings) -> DataParallel:
    """Initialise the communication and the data-parallel context for ``settings`` (idempotent); return this
    process's place. A single-process run (``use_parallel`` false) touches nothing."""
    if not settings.use_parallel:
        return world()
    if world().distributed or _ACTIVE.get("initialised"):
        return world()
    if not _launched_by_msrun():
        raise ConfigError("use_parallel: true needs one process per rank started by a distributed launcher: "
                          "msrun --worker_num N --local_worker_num N --master_port PORT run_mindformer.py ... "
                          "(scripts/run_distribute.sh N CONFIG)")
    from mindspore.communication import get_group_size, get_rank, init

    init()
    place = DataParallel(get_rank(), get_group_size())
    if settings.data_parallel not in (None, place.world_size):
        raise ConfigError(f"parallel_config.data_parallel: {settings.data_parallel}, but the job has "
                          f"{place.world_size} ranks (msrun --worker_num); set it to {place.world_size} or remove it")
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=settings.gradients_mean,
                                 device_num=place.world_size,
                                 enable_parallel_optimizer=settings.enable_parallel_optimizer)
    _ACTIVE.update(world=place, initialised=True)
    # the pid lets scripts/run_distribute.sh name the rank of a worker that msrun reports dead
    logger.info("data-parallel rank %d of %d (pid %d, %s backend)", place.rank, place.world_size, os.getpid(),
                ms.get_context("device_target"))
    return place

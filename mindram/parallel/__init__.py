"""Data-parallel training on MindSpore's distributed stack (msrun; HCCL, NCCL or the CPU collective backend),
configured with MindFormers' ``use_parallel`` / ``parallel`` / ``parallel_config`` keys, and the memory levers
of big models (``recompute_config``)."""
from .collectives import GatherRows
from .context import DataParallel, ParallelSettings, init_parallel, parallel_settings, world
from .training import distribute_network, grad_reducer, loss_mean

__all__ = ["DataParallel", "GatherRows", "ParallelSettings", "distribute_network", "grad_reducer", "init_parallel",
           "loss_mean", "parallel_settings", "world"]

"""``build_clip_dataset``: a ``mindspore.dataset`` pipeline of (pixel_values, input_ids[, label]) batches.

Pipeline (assembled by :mod:`mindram.data.assembly`, shared with the tagging builder)::

    GeneratorDataset(codes, sampler=ResumableSampler)       # order: seeded per-epoch permutation
      .map(ClipSampleLoader, num_parallel_workers=W)        # decode + preprocess/augment + tokenise
      .batch(B, drop_remainder)

The generator only passes the sampler's codes (``epoch * len(source) + index``) through; all the work runs in
the ``map`` workers — threads by default (PIL decode/resize release the GIL; nothing is pickled or copied, so
the bad-item counters are shared). Why ``map`` and not ``GeneratorDataset(num_parallel_workers=W)``: with
W > 1 MindSpore 2.10's generator fetch loop polls its result queues with ``time.sleep(0.1)``; on a 2-core
machine it was *slower* with 2 workers than with 1 (JPEG 500x375 -> 224 train transform: 257 vs 277 img/s;
64-px synthetic: 340 vs 1,660 img/s), while ``map`` with 2 threads gave 420 img/s (JPEG) and 1,500 img/s.
``python_multiprocessing=True`` (worker processes) measured slower on 2 cores (290 img/s JPEG) and keeps the
counters in the workers; it is off by default.

Unreadable images (corrupt, truncated, missing, unsupported) are **substituted**: the worker takes the next
index in source order (wrapping around) that loads, so every batch stays full and every epoch keeps its fixed
length (which MindSpore requires and which makes resume arithmetic exact). Each bad index is logged once,
remembered (it is not decoded again), and counted in ``source.stats`` (``source.bad_items``,
``source.stats.num_substituted``); at the end of every epoch one summary line is logged. With
``python_multiprocessing=True`` the counters live in the worker processes (the log lines still appear).
Substitution is for **training only** (a replaced sample changes nothing but which image fills the slot).
Evaluation passes ``substitute_unreadable=False``: every item stays in its place, an unreadable one becomes a
placeholder row flagged ``readable=False``, and the evaluation leaves it out of every metric (its label and its
captions too) and reports it (``num_skipped``) — a replaced image would otherwise be scored twice, under the
label/captions of the item it replaces. The flag costs training nothing (no extra column there).

Resume: ``build_clip_dataset(..., start_epoch=e, start_step=k)`` yields exactly the batches that an
uninterrupted pipeline (same source, seed, batch size) yields from step ``k`` of epoch ``e`` on: the first
pipeline epoch is the rest of epoch ``e`` (``steps_per_epoch - k`` batches), later epochs are full epochs
``e + 1, e + 2, ...``. ``start_step`` may exceed an epoch (a global step): it is folded into ``start_epoch``.
"""
import logging
import threading
from typing import Callable, Dict, Optional, Tuple

import mindspore.dataset as msds
import numpy as np

from ..errors import ConfigError, DataError
from ..models.clip.image_processing import CLIPImageProcessor
from ..models.clip.tokenizer import tokenize
from ..utils.validation import check_int
from .assembly import PipelinePlan, assemble_pipeline, plan_pipeline
from .base import DataStats, PicklableLock, Record
from .transforms import EvalTransform, TrainTransform
from .webdataset import build_webdataset_pipeline

logger = logging.getLogger(__name__)

__all__ = ["build_clip_dataset", "ClipSampleLoader", "output_columns"]


def _describe(image) -> str:
    return str(image) if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__") \
        else f"<in-memory {type(image).__name__}>"


def output_columns(has_labels: bool, multi_caption: bool, return_index: bool = False, readable: bool = False):
    """Column names produced by :func:`build_clip_dataset` for a source of this kind, in order."""
    wanted = {"pixel_values": True, "input_ids": True, "label": has_labels, "num_captions": multi_caption,
              "index": return_index, "readable": readable}
    return [name for name, keep in wanted.items() if keep]


class ClipSampleLoader(PicklableLock):
    """Map operation of the pipeline: sampler code -> tuple of numpy columns (see :func:`output_columns`).

    Called concurrently by the ``map`` workers; it is thread-safe. With ``substitute`` an unreadable item is
    replaced by the next readable one (training); without, its row is a placeholder flagged ``readable=False``
    (evaluation, which leaves it out).
    """

    def __init__(self, source, transform: Callable, tokenizer_fn: Callable, context_length: int,
                 num_captions: int, plan: PipelinePlan, return_index: bool, substitute: bool = True):
        self.source = source
        self.transform = transform
        self.tokenizer_fn = tokenizer_fn
        self.context_length = context_length
        self.num_captions = num_captions
        self.with_label = bool(getattr(source, "has_labels", False))
        self.sampler = plan.sampler
        self.seed = plan.seed
        self.return_index = return_index
        self.substitute = bool(substitute)
        self._bad_outcome = "it is replaced by the next valid item" if self.substitute else \
            "its row is flagged readable=False and left out of the evaluation"
        self.stats: DataStats = source.stats if isinstance(getattr(source, "stats", None), DataStats) else DataStats()
        self._first_epoch, self._first_epoch_items = plan.start_epoch, plan.first_epoch_items
        self._lock = threading.Lock()
        self._served: Dict[int, int] = {}
        self._substituted: Dict[int, int] = {}
        self._truncation_warned = False

    def __len__(self) -> int:
        return len(self.source)

    def _load(self, epoch: int, start: int):
        """First readable record at or after ``start`` (wrapping): ``(index, record, pixels)``; without
        substitution only ``start`` itself is tried, and ``(start, None, None)`` means it cannot be read."""
        n = len(self.source)
        for offset in range(n if self.substitute else 1):
            index = (start + offset) % n
            if self.stats.is_bad(index):
                continue
            record = None
            try:
                record = Record(*self.source[index])
                rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, index, 1]))
                pixels = self.transform(record.image, rng)
            except (DataError, OSError) as e:  # FileNotFoundError, PIL's OSError on truncated data, ...
                ref = _describe(record.image) if record is not None else f"record {index}"
                self.stats.mark_bad(index, f"{ref}: {type(e).__name__}: {e}", self._bad_outcome)
                continue
            if offset:
                self.stats.add_substitution()
                with self._lock:
                    self._substituted[epoch] = self._substituted.get(epoch, 0) + 1
            return index, record, pixels
        if not self.substitute:
            return start, None, None
        raise DataError(f"no readable item in {type(self.source).__name__} ({self.stats.num_bad} of {n} "
                        "items failed to load; see the warnings above)")

    def _tokens(self, caption) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        if self.num_captions == 0:
            text = caption if isinstance(caption, str) else caption[0]
            return np.asarray(self.tokenizer_fn([text], context_length=self.context_length)[0], np.int32), None
        captions = [caption] if isinstance(caption, str) else list(caption)
        if len(captions) > self.num_captions:
            if not self._truncation_warned:
                self._truncation_warned = True
                logger.warning("a record has %d captions; only the first num_captions=%d are kept",
                               len(captions), self.num_captions)
            captions = captions[:self.num_captions]
        ids = np.zeros((self.num_captions, self.context_length), np.int32)
        ids[:len(captions)] = self.tokenizer_fn(captions, context_length=self.context_length)
        return ids, np.asarray(len(captions), np.int32)

    def _count(self, epoch: int) -> None:
        expected = self._first_epoch_items if epoch == self._first_epoch else self.sampler.samples_per_epoch
        with self._lock:
            served = self._served.get(epoch, 0) + 1
            done = served >= expected
            self._served[epoch] = 0 if done else served
            replaced = self._substituted.pop(epoch, 0) if done else 0
        if done:
            level = logging.WARNING if replaced else logging.DEBUG
            logger.log(level, "epoch %d: %d sample(s) replaced because their image could not be read; %s",
                       epoch, replaced, self.stats.summary())

    def _columns(self, record: Record, pixels) -> list:
        """pixel_values, input_ids[, label][, num_captions] of a loaded record."""
        ids, count = self._tokens(record.caption)
        row = [np.asarray(pixels, np.float32), ids]
        if self.with_label:
            row.append(np.asarray(record.label, np.int32))
        if count is not None:
            row.append(count)
        return row

    def _placeholder_columns(self) -> list:
        """The same columns for an item that could not be read: zero pixels and token ids, label -1, 0 captions
        (shapes as for a readable item, so it batches; the consumer drops it by its ``readable`` flag)."""
        size = self.transform.image_size
        ids = (self.num_captions, self.context_length) if self.num_captions else (self.context_length,)
        row = [np.zeros((3, size, size), np.float32), np.zeros(ids, np.int32)]
        if self.with_label:
            row.append(np.asarray(-1, np.int32))
        if self.num_captions:
            row.append(np.asarray(0, np.int32))
        return row

    def __call__(self, code) -> tuple:
        epoch, start = self.sampler.decode(code)
        index, record, pixels = self._load(epoch, start)
        row = self._placeholder_columns() if record is None else self._columns(record, pixels)
        if self.return_index:
            row.append(np.asarray(index, np.int32))
        if not self.substitute:
            row.append(np.asarray(record is not None))
        self._count(epoch)
        return tuple(row)


def build_clip_dataset(source, image_processor: CLIPImageProcessor, tokenizer_fn: Callable = tokenize,
                       batch_size: int = 32, shuffle: bool = True, num_workers: int = 2,
                       drop_remainder: bool = True, seed: int = 0, context_length: int = 77, *,
                       train_transform: bool = False, train_scale: Tuple[float, float] = (0.9, 1.0),
                       start_epoch: int = 0, start_step: int = 0, num_captions: Optional[int] = None,
                       return_index: bool = False, substitute_unreadable: bool = True,
                       python_multiprocessing: bool = False) -> msds.Dataset:
    """Build the batched CLIP input pipeline over a record source.

    Args:
        source: a :class:`~mindram.data.base.RecordSource` (``len``, ``source[i] -> Record``), or a streaming
            :class:`~mindram.data.webdataset.WebDataset` (training only: built by
            :func:`~mindram.data.webdataset.build_webdataset_pipeline`).
        image_processor: gives the eval transform (and size/mean/std/interpolation of the train transform).
        tokenizer_fn: ``f(list_of_str, context_length=L) -> int (N, L)``, default :func:`mindram.tokenize`.
        batch_size, drop_remainder: batching; with ``drop_remainder`` the samples that would not fill a batch
            are not even loaded.
        shuffle, seed: epoch ``e`` uses a permutation seeded by ``(seed, e)``; augmentations are seeded by
            ``(seed, epoch, index)``.
        num_workers: generator workers (threads unless ``python_multiprocessing``).
        context_length: token length L.
        train_transform: use open_clip's train transform (RandomResizedCrop(``train_scale``) + normalise)
            instead of the processor's eval transform.
        start_epoch, start_step: resume point (see module docstring); ``start_step`` counts batches.
        num_captions: K for sources whose records carry caption lists (longer lists are cut to K, shorter ones
            padded with zero rows); default: the largest list length of the source. 0 means one caption per
            sample (the first one of a list).
        return_index: add an ``index`` column (int32: the source index actually used, after substitution).
        substitute_unreadable: replace an unreadable image by the next readable one (training, the default);
            False (evaluation) keeps every item in its place and adds a ``readable`` bool column: an unreadable
            item's row holds placeholders (zeros, label -1) and ``readable=False``, so that the consumer leaves
            it out of every metric and reports it.

    Returns:
        a ``mindspore.dataset`` pipeline with columns, in order: ``pixel_values`` float32 (N, 3, S, S);
        ``input_ids`` int32 (N, L), or (N, K, L) for caption-list sources with zero rows as padding;
        ``label`` int32 (N,) for classification sources; ``num_captions`` int32 (N,) for caption-list
        sources; ``index`` int32 (N,) when requested; ``readable`` bool (N,) without substitution.
        ``get_dataset_size()`` is the full steps per epoch.
    """
    if getattr(source, "streaming", False):
        if return_index or not substitute_unreadable or num_captions:
            raise ConfigError(f"{type(source).__name__} streams training data only (no return_index, evaluation "
                              "or caption lists); evaluate on a record source")
        return build_webdataset_pipeline(source, image_processor, tokenizer_fn, batch_size, shuffle, num_workers,
                                         seed, context_length, train_transform=train_transform,
                                         train_scale=train_scale, start_epoch=start_epoch, start_step=start_step)
    if not hasattr(source, "__len__") or not hasattr(source, "__getitem__"):
        raise ConfigError(f"source must be a random-access record source, got {type(source).__name__}")
    if not hasattr(image_processor, "preprocess"):
        raise ConfigError(f"image_processor must be a CLIPImageProcessor, got {type(image_processor).__name__}")
    plan = plan_pipeline(source, batch_size, shuffle, num_workers, drop_remainder, seed, start_epoch, start_step)
    context_length = check_int(context_length, "context_length", 1)
    if num_captions is None:
        num_captions = source.max_captions() if hasattr(source, "max_captions") else 0
    num_captions = check_int(num_captions, "num_captions", 0)

    transform = TrainTransform(image_processor, scale=train_scale) if train_transform \
        else EvalTransform(image_processor)
    loader = ClipSampleLoader(source, transform, tokenizer_fn, context_length, num_captions, plan, return_index,
                              substitute=substitute_unreadable)
    columns = output_columns(loader.with_label, num_captions > 0, return_index, not loader.substitute)
    dataset = assemble_pipeline(loader, columns, plan, python_multiprocessing)
    logger.info("CLIP dataset over %s: %s", type(source).__name__, plan.describe())
    return dataset

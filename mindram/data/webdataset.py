"""Webdataset tar shards (open_clip's ``--train-data '/data/{00000..01023}.tar'``), streamed for CLIP training.

A shard is a tar file whose members are grouped into samples by *key* (the member name up to the first dot of its
basename): ``000123.jpg`` + ``000123.txt`` is one sample. The image member is the first of ``image_key``
(``jpg;png;jpeg;webp``) present, the caption the first of ``caption_key`` (``txt;text``). ``sizes.json`` beside
the shards (``{"00000.tar": 10000, ...}``, written by ``scripts/make_shards.py``; open_clip reads the same file)
gives the sample counts; without it the shards are counted once from their tar headers (no payload is read).
``sizes.json`` must be a mapping of shard names to ints >= 0, each no larger than its shard can hold by its size
on disk; a shard read to its end that holds another count is a DataError naming the entry.

Bounds (:mod:`.tar_shard`): plain, gzip, bzip2 and xz shards; only the image and caption members are read, each
at most ``max_member_bytes`` (64 MiB); a larger member (or header) ends the reading of its shard.

Streaming, bounded memory: shards are read sequentially in tar stream mode; only the members of the current
sample are held, and the pipeline's queues are bounded; no per-sample index is built, whatever the shard count.

Split across ranks: in a data-parallel job (:func:`~mindram.data.sampler.shard_pipelines`) rank ``r`` of ``N``
owns the shards ``r, r + N, ...`` (at least one each); every rank runs ``min_r(samples of rank r) // batch_size``
steps per epoch, so the ranks stay in step (the rest of a larger rank's samples is left out of that epoch).
``len(source)`` is what an epoch uses: ``N * min_r(samples of rank r)`` (all samples on one rank). Within a rank,
decoding happens in the reader (one per rank, converting to RGB as open_clip's ``decode("pilrgb")``); resizing,
augmentation and tokenising run in ``num_workers`` map threads.

Order: with ``shuffle`` each epoch visits the rank's shards in an order seeded by ``(seed, epoch)``, samples in
tar order (there is no sample-level shuffle buffer); without, shard order. Augmentation is seeded by
``(seed, epoch, shard, position in shard)``.

Corrupt members: a sample whose image cannot be decoded (or that lacks an image or a caption) is skipped, logged
once and counted in ``source.stats`` (``num_bad``); the reader takes the next readable sample instead (wrapping to
the rank's first shard at the end), so that every epoch keeps its number of steps. A corrupt shard (truncated,
bad header checksum, corrupt compressed stream, oversized member) is read up to its defect; its rest is skipped,
logged once and counted as one item (key ``-1 - shard``). Each epoch ends with one line counting what it skipped.

Resume (``start_epoch``, ``start_step``): the reader skips ``start_step * batch_size`` samples of the epoch's
stream — whole shards by their sizes without opening them, then the members of the shard it lands in without
decoding them. This is exact when no corrupt sample lies in the skipped part; otherwise the resumed stream is
shifted by the number of corrupt samples skipped before the checkpoint (they had been replaced by later samples).
"""
import io
import json
import logging
import re
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import mindspore.dataset as msds
import numpy as np
from PIL import Image

from ..errors import ConfigError, DataError
from ..utils.image_files import decode_checked
from ..models.clip.tokenizer import tokenize
from ..utils.validation import check_int
from .base import DataStats
from .sampler import current_shard, steps_per_epoch
from .tar_shard import MAX_MEMBER_BYTES, iter_tar_samples, max_tar_samples
from .transforms import EvalTransform, TrainTransform

logger = logging.getLogger(__name__)

__all__ = ["WebDataset", "build_webdataset_pipeline", "expand_urls", "read_samples"]

SIZES_FILE = "sizes.json"
_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_urls(urls) -> List[Path]:
    """Shard paths of open_clip's ``--train-data`` spelling: ``dir/{00000..00003}.tar`` (brace ranges keep the
    zero padding), several specs joined by ``::``, or a list of them."""
    specs = list(urls) if isinstance(urls, (list, tuple)) else str(urls).split("::")
    paths: List[str] = []
    for spec in specs:
        expanded = [str(spec)]
        while any(_BRACES.search(s) for s in expanded):
            out = []
            for s in expanded:
                m = _BRACES.search(s)
                if m is None:
                    out.append(s)
                    continue
                lo, hi = m.group(1), m.group(2)
                if int(hi) < int(lo):
                    raise ConfigError(f"webdataset urls {spec!r}: empty range {{{lo}..{hi}}}")
                width = len(lo)
                out += [s[:m.start()] + str(i).zfill(width) + s[m.end():] for i in range(int(lo), int(hi) + 1)]
            expanded = out
        paths += expanded
    if not paths:
        raise ConfigError(f"webdataset urls {urls!r}: no shard")
    return [Path(p) for p in paths]


def read_samples(path: Path, extensions=None, max_member_bytes: int = MAX_MEMBER_BYTES,
                 skip: int = 0) -> Iterator[Tuple[str, Dict[str, bytes]]]:
    """``(key, {extension: bytes})`` of each sample of tar shard ``path`` (see :mod:`.tar_shard`: members of
    ``extensions`` only, each at most ``max_member_bytes``; the first ``skip`` samples passed over by their
    headers); a corrupt shard raises DataError after the samples before the defect."""
    return iter_tar_samples(path, extensions, max_member_bytes, skip)


class WebDataset:
    """Caption-only source over webdataset tar shards, read as a stream (module docstring).

    Args:
        urls: shard paths, e.g. ``/data/laion/{00000..01023}.tar`` (also ``a.tar::b.tar`` or a list).
        image_key, caption_key: ``;``-separated member extensions of the image and the caption (open_clip's
            ``jpg;png;jpeg;webp`` and ``txt``).
        max_member_bytes: the largest member (and tar header) read, default 64 MiB; a larger one ends the
            reading of its shard, which is skipped from there on (logged, counted). Raise it for shards you
            trust.
    """

    streaming = True
    has_labels = False
    class_names = None
    split = "train"

    def __init__(self, urls, image_key: str = "jpg;png;jpeg;webp", caption_key: str = "txt;text",
                 max_member_bytes: int = MAX_MEMBER_BYTES):
        self.image_keys = [k.strip().lower() for k in str(image_key).split(";") if k.strip()]
        self.caption_keys = [k.strip().lower() for k in str(caption_key).split(";") if k.strip()]
        if not self.image_keys or not self.caption_keys:
            raise ConfigError(f"webdataset: image_key {image_key!r} / caption_key {caption_key!r}: expected "
                              f"';'-separated extensions")
        self.max_member_bytes = check_int(max_member_bytes, "webdataset max_member_bytes", 1)
        self._use_shards(expand_urls(urls), "webdataset")

    def _use_shards(self, shards: List[Path], what: str) -> None:
        """Check that every shard exists, then read (or count) their sizes."""
        self.shards = shards
        missing = [str(p) for p in self.shards if not p.is_file()]
        if missing:
            raise DataError(f"{what}: {len(missing)} of {len(self.shards)} shard(s) not found, e.g. {missing[0]}")
        self.sizes = self._read_sizes()
        self.stats = DataStats()

    def shard_samples(self, path: Path, skip: int = 0,
                      read: bool = True) -> Iterator[Tuple[str, Dict[str, bytes]]]:
        """``(key, {extension: bytes})`` of the samples of one shard after the first ``skip`` (passed over by
        their headers), the image and caption members read unless ``read`` is False (counting: empty bytes);
        DataError at a defect of the shard, after the samples before it. Other formats override it."""
        return read_samples(path, self.image_keys + self.caption_keys if read else (), self.max_member_bytes,
                            skip)

    def max_samples(self, path: Path) -> Optional[int]:
        """The most samples a shard can hold by its size on disk (None: no useful bound)."""
        return max_tar_samples(path)

    def _read_table(self, table_file: Path) -> Dict[str, int]:
        """``sizes.json`` beside the shards: ``{shard name: sample count}`` ({} when there is none)."""
        if not table_file.is_file():
            return {}
        try:
            table = json.loads(table_file.read_text(encoding="utf-8"))
        except (ValueError, OSError) as e:   # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise DataError(f"{table_file}: not a JSON mapping of shard name to sample count ({e})") from e
        if not isinstance(table, dict):
            raise DataError(f"{table_file}: a JSON {type(table).__name__}, expected a mapping of shard name to "
                            "sample count such as {\"00000.tar\": 10000}")
        for name, size in table.items():
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise DataError(f"{table_file}: {name!r}: {size!r:.40} is not a sample count (an int >= 0)")
        return table

    def _count(self, shard: Path) -> int:
        logger.info("%s has no %s entry: counting its samples", shard, SIZES_FILE)
        count = 0
        try:
            for count, _ in enumerate(self.shard_samples(shard, read=False), 1):
                pass
        except DataError as e:
            logger.warning("%s; counting %d sample(s) before it (training skips the rest)", e, count)
        return count

    def _read_sizes(self) -> List[int]:
        found: Dict[Path, Dict[str, int]] = {}
        sizes = []
        for shard in self.shards:
            table_file = shard.parent / SIZES_FILE
            if table_file not in found:
                found[table_file] = self._read_table(table_file)
            size = found[table_file].get(shard.name)
            if size is None:
                size = self._count(shard)
            else:
                bound = self.max_samples(shard)
                if bound is not None and size > bound:
                    raise DataError(f"{table_file}: {shard.name!r} claims {size} samples, but {shard} "
                                    f"({shard.stat().st_size} bytes) can hold at most {bound} (a wrong entry or a "
                                    "truncated shard); fix or remove the entry (without it the shard is counted)")
            sizes.append(size)
        if not sum(sizes):
            raise DataError(f"webdataset: the {len(self.shards)} shard(s) hold no sample")
        return sizes

    def rank_shards(self, num_shards: int, shard_id: int) -> List[int]:
        """Indices of the shards rank ``shard_id`` of ``num_shards`` reads."""
        if len(self.shards) < num_shards:
            raise ConfigError(f"webdataset: {len(self.shards)} shard(s) for {num_shards} ranks; every rank needs "
                              f"at least one shard (write smaller shards with scripts/make_shards.py)")
        return list(range(shard_id, len(self.shards), num_shards))

    def rank_samples(self, num_shards: int) -> int:
        """Samples every rank uses per epoch: the smallest rank's total."""
        return min(sum(self.sizes[i] for i in self.rank_shards(num_shards, r)) for r in range(num_shards))

    def __len__(self) -> int:
        num_shards, _ = current_shard()
        return num_shards * self.rank_samples(num_shards)

    def max_captions(self) -> int:
        return 0

    def mark_shard_bad(self, shard: int, position: int, error: DataError) -> None:
        """Count the rest of ``shard`` from sample ``position`` on as one unreadable item (key ``-1 - shard`` in
        ``stats``, apart from the samples' indices), logged once."""
        self.stats.mark_bad(-1 - shard, str(error), f"the rest of the shard from sample {position} on is skipped")

    def size_mismatch(self, shard: int, held: int) -> str:
        """The message of a shard read to its end whose sample count differs from its size."""
        table_file = self.shards[shard].parent / SIZES_FILE
        return (f"{table_file}: {self.shards[shard].name!r} claims {self.sizes[shard]} samples, the shard holds "
                f"{held}; fix or remove the entry (without it the shard is counted)")

    def decode(self, shard: int, position: int, key: str,
               members: Dict[str, bytes]) -> Optional[Tuple[np.ndarray, str]]:
        """``(uint8 RGB array, caption)`` of sample ``position`` of ``shard``, or None when it cannot be used
        (logged once and counted in ``stats`` under its index over all shards, the message naming shard and key)."""
        where = f"{self.shards[shard]}: sample {key}"
        image = next((members[k] for k in self.image_keys if k in members), None)
        caption = next((members[k] for k in self.caption_keys if k in members), None)
        try:
            if image is None or caption is None:
                raise DataError(f"no {'image' if image is None else 'caption'} member "
                                f"(has {sorted(members)})")
            with Image.open(io.BytesIO(image)) as im:   # the pixel budget is checked before decoding
                rgb = np.asarray(decode_checked(im, where).convert("RGB"))
            return rgb, caption.decode("utf-8").strip()
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... on corrupt data
            index = sum(self.sizes[:shard]) + position
            self.stats.mark_bad(index, f"{where}: {type(e).__name__}: {e}", "it is skipped")
            return None


class _ShardStream:
    """Generator source of one rank: ``(image, caption, position)`` rows of one epoch per iteration."""

    def __init__(self, source: WebDataset, shards: List[int], samples: int, shuffle: bool, seed: int,
                 start_epoch: int, skip: int):
        self.source, self.shards, self.samples = source, shards, samples
        self.shuffle, self.seed = shuffle, seed
        self.epoch, self.skip = start_epoch, skip
        self.defects = 0   # shard defects met in the current epoch

    def shard_order(self, epoch: int) -> List[int]:
        if not self.shuffle:
            return list(self.shards)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, 7]))
        return [self.shards[i] for i in rng.permutation(len(self.shards))]

    def _raw(self, order: List[int], skip: int):
        """``(shard, position, key, members)`` from ``skip`` samples into ``order`` on, wrapping around. A defect
        of a shard skips its rest (logged, counted); a pass over every shard from its start that finds no sample
        ends the stream; a shard read to its end that holds another number of samples than its size is a
        DataError (a wrong ``sizes.json``)."""
        while True:
            whole_pass, found = skip == 0, False
            for shard in order:
                size = self.source.sizes[shard]
                if skip >= size:
                    skip -= size          # whole shard skipped by its size, never opened
                    continue
                position, skip = skip, 0  # the first ``skip`` samples passed over by their headers
                try:
                    for key, members in self.source.shard_samples(self.source.shards[shard], position):
                        found = True
                        yield shard, position, key, members
                        position += 1
                except DataError as e:
                    self.source.mark_shard_bad(shard, position, e)
                    self.defects += 1
                    continue
                if position != size:
                    raise DataError(self.source.size_mismatch(shard, position))
            if whole_pass and not found:
                return

    def __len__(self) -> int:
        return self.samples - self.skip

    def __iter__(self):
        epoch, skip = self.epoch, self.skip
        self.epoch, self.skip = epoch + 1, 0
        wanted, tried, replaced, self.defects = self.samples - skip, 0, 0, 0
        for shard, position, key, members in self._raw(self.shard_order(epoch), skip):
            tried += 1
            if tried > 2 * self.samples + self.source.stats.num_bad:
                break
            decoded = self.source.decode(shard, position, key, members)
            if decoded is None:
                replaced += 1
                self.source.stats.add_substitution()
                continue
            wanted -= 1
            yield decoded[0], np.array(decoded[1]), np.array([epoch, shard, position], np.int64)
            if wanted == 0:
                logger.log(logging.WARNING if replaced or self.defects else logging.DEBUG,
                           "webdataset epoch %d: %d unreadable sample(s) and %d corrupt shard part(s) skipped, "
                           "replaced by the next readable samples; %s", epoch, replaced, self.defects,
                           self.source.stats.summary())
                return
        names = [self.source.shards[s].name for s in self.shards]
        raise DataError(f"webdataset: no readable sample left in shards {names[:5]} ({self.source.stats.summary()})")


class _StreamLoader:
    """Map operation: (RGB image, caption, position) → (pixel_values, input_ids), seeded per sample."""

    def __init__(self, transform, tokenizer_fn: Callable, context_length: int, seed: int):
        self.transform, self.tokenizer_fn = transform, tokenizer_fn
        self.context_length, self.seed = context_length, seed

    def __call__(self, image, caption, position):
        epoch, shard, index = (int(v) for v in position)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, shard, index, 1]))
        pixels = self.transform(np.ascontiguousarray(image), rng)
        text = caption.item() if isinstance(caption, np.ndarray) else caption
        text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
        ids = self.tokenizer_fn([text], context_length=self.context_length)[0]
        return np.asarray(pixels, np.float32), np.asarray(ids, np.int32)


def build_webdataset_pipeline(source: WebDataset, image_processor, tokenizer_fn: Callable = tokenize,
                              batch_size: int = 32, shuffle: bool = True, num_workers: int = 2, seed: int = 0,
                              context_length: int = 77, *, train_transform: bool = False,
                              train_scale: Tuple[float, float] = (0.9, 1.0), start_epoch: int = 0,
                              start_step: int = 0) -> msds.Dataset:
    """Batched ``(pixel_values, input_ids)`` pipeline over this rank's shards of ``source`` (module docstring);
    batches are always full (``drop_remainder``). ``get_dataset_size()`` is the steps per epoch."""
    batch_size = check_int(batch_size, "batch_size", 1)
    num_workers = check_int(num_workers, "num_workers", 1)
    context_length = check_int(context_length, "context_length", 1)
    num_shards, shard_id = current_shard()
    samples = source.rank_samples(num_shards)
    steps = steps_per_epoch(samples, batch_size, True)
    if steps == 0:
        raise DataError(f"webdataset: {samples} samples per rank, fewer than batch_size={batch_size}")
    start_epoch = check_int(start_epoch, "start_epoch", 0)
    start_step = check_int(start_step, "start_step", 0)
    start_epoch, start_step = start_epoch + start_step // steps, start_step % steps
    stream = _ShardStream(source, source.rank_shards(num_shards, shard_id), steps * batch_size, shuffle, seed,
                          start_epoch, start_step * batch_size)
    transform = TrainTransform(image_processor, scale=train_scale) if train_transform \
        else EvalTransform(image_processor)
    loader = _StreamLoader(transform, tokenizer_fn, context_length, seed)
    dataset = msds.GeneratorDataset(stream, column_names=["image", "caption", "position"], shuffle=False,
                                    num_parallel_workers=1, python_multiprocessing=False)
    dataset = dataset.map(operations=loader, input_columns=["image", "caption", "position"],
                          output_columns=["pixel_values", "input_ids"], num_parallel_workers=num_workers,
                          python_multiprocessing=False)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    logger.info("webdataset: %d shard(s) for this rank (%d of %d), %d steps/epoch of %d, starting at epoch %d step "
                "%d, %d worker(s)", len(stream.shards), shard_id, num_shards, steps, batch_size, start_epoch,
                start_step, num_workers)
    return dataset

"""Multi-label tagging data (RAM / RAM++): sources and a batched, resumable ``mindspore.dataset`` builder.

Sources (``len(src)``, ``src[i] -> Record(image, caption, label)`` with ``label`` the ascending int32 array of
the record's positive tag indices; every source has ``num_tags`` and, when known, ``tag_names``):

* :class:`RAMTaggingJson` — recognize-anything's training json (docs/ram.md#training);
* :class:`TaggingAnnotations` — its evaluation sets (OpenImages ``test/<id>,name,name``; ImageNet-multi /
  HICO ``file,i j k``), parsed by :func:`mindram.metrics.read_annotations`;
* :class:`SyntheticTags` — the :class:`~mindram.data.SyntheticCaptions` images with 19 tags (colour, shape,
  size, position; English + Chinese names): 4 positive tags per image, deterministic, no download.

Pipeline: :func:`build_tagging_dataset` — the machinery of :func:`~mindram.data.build_clip_dataset` (the same
plan and assembly of :mod:`mindram.data.assembly`: seeded :class:`ResumableSampler`, ``set_init_step`` resume;
the same bad-image substitution and counters via :class:`ClipSampleLoader`) with multi-label columns:
``pixel_values`` float32 (N, 3, S, S), ``labels`` float32 (N, T) multi-hot, optionally ``teacher_pixel_values`` (the CLIP teacher's view at its own size, an independent
augmentation draw as in the reference finetuning), ``input_ids`` (one caption per image, drawn per sample and
epoch, CLIP-tokenised for RAM++'s alignment loss) and ``index``; with a teacher feature store
(:mod:`mindram.data.teacher_features`) ``teacher_image_features`` / ``teacher_text_features`` replace the teacher
pixels and caption ids.
"""
import json
import logging
import os
import re
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import mindspore.dataset as msds
import numpy as np

from ..errors import ConfigError, DataError
from ..metrics.multilabel import read_annotations
from ..utils.tag_lists import read_tag_list
from .base import IMAGE_EXTENSIONS, Record, RecordSource, find_annotation_file
from ..utils.validation import check_int
from .assembly import assemble_pipeline, plan_pipeline
from .builder import ClipSampleLoader
from .synthetic import _SPLIT_IDS, COLOURS, POSITIONS, SHAPES, SIZES, SyntheticCaptions
from .teacher_features import pick_caption, record_captions
from .transforms import EvalTransform, TrainTransform

logger = logging.getLogger(__name__)

__all__ = ["RAMTaggingJson", "TaggingAnnotations", "SyntheticTags", "SYNTHETIC_TAGS", "SYNTHETIC_TAGS_CHINESE",
           "build_tagging_dataset", "tagging_columns", "pre_caption", "write_synthetic_tag_files",
           "SYNTHETIC_TAG_DIR"]


def pre_caption(caption: str, max_words: int = 30) -> str:
    """recognize-anything ``ram/data/utils.py:pre_caption``: lower-case, ``.!"()*#:;~`` → space, runs of 2+
    whitespace → one space, strip newlines/spaces at the ends, keep the first ``max_words`` words."""
    caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption)
    caption = caption.rstrip("\n").strip(" ")
    words = caption.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else caption


def _positives(ids, num_tags: int, where: str) -> np.ndarray:
    """Sorted unique int32 tag indices, checked against ``num_tags``."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (list, tuple, np.ndarray)):
        raise DataError(f"{where}: expected a list of tag indices, got {ids!r:.80}")
    try:
        out = np.unique(np.asarray(ids, dtype=np.int64)).astype(np.int32)
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: expected integer tag indices, got {ids!r:.80}") from e
    if out.size and (out[0] < 0 or out[-1] >= num_tags):
        raise DataError(f"{where}: tag index out of range [0, {num_tags}): {ids!r:.80}")
    return out


class _TaggingSource(RecordSource):
    """Common attributes of the tagging sources."""

    num_tags: int = 0
    tag_names: Optional[List[str]] = None
    tag_names_chinese: Optional[List[str]] = None

    def max_captions(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={self.split!r}, num_records={len(self)}, num_tags={self.num_tags})"


class RAMTaggingJson(_TaggingSource):
    """recognize-anything training json: a list of ``{image_path, caption, union_label_id, parse_label_id}``.

    Args:
        root: directory ``image_path`` is joined to (the reference's ``image_path_root``; absolute paths win).
        annotation_file: the json file (as is or relative to ``root``); default: the one ``*_ram.json`` (else
            the one ``*.json``) in ``root``.
        num_tags: size of the tag vocabulary the ids index (4585 for RAM's list).
        max_words: ``pre_caption`` truncation (the reference uses 30).

    ``caption`` is a list (a string is one caption); every caption goes through :func:`pre_caption`, and the
    pipeline draws one per sample (seeded by seed, epoch, index). ``union_label_id`` (parsed + pseudo tags) is the
    multi-hot target; an entry without it is an error (the reference cannot batch it either).
    ``parse_label_id`` (one id list per caption, used only by RAM's caption-generation loss, which mindram does
    not train) is kept in ``parse_labels``.
    """

    def __init__(self, root: Union[str, os.PathLike], annotation_file: Optional[Union[str, os.PathLike]] = None,
                 num_tags: int = 4585, max_words: int = 30):
        super().__init__()
        self.root = Path(root)
        self.num_tags = check_int(num_tags, "num_tags", 1)
        path = find_annotation_file(self.root, annotation_file, ("*_ram.json", "*.json"), "RAM training json")
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid json: {e}") from e
        if not isinstance(entries, list):
            raise DataError(f"{path}: expected a json list of entries, got {type(entries).__name__}")
        self.parse_labels: List[Optional[List[np.ndarray]]] = []
        for i, entry in enumerate(entries):
            where = f"{path} entry {i}"
            if not isinstance(entry, dict) or "image_path" not in entry:
                raise DataError(f"{where}: expected an object with 'image_path', got {entry!r:.80}")
            if entry.get("union_label_id") is None:
                raise DataError(f"{where}: no 'union_label_id' (the multi-hot training target)")
            captions = entry.get("caption", [])
            captions = [captions] if isinstance(captions, str) else list(captions)
            captions = [pre_caption(str(c), max_words) for c in captions]
            labels = _positives(entry["union_label_id"], self.num_tags, f"{where} union_label_id")
            parse = entry.get("parse_label_id")
            self.parse_labels.append(None if parse is None else
                                     [_positives(p, self.num_tags, f"{where} parse_label_id") for p in parse])
            self._items.append((str(self.root / entry["image_path"]), captions, labels))
        if not self._items:
            raise DataError(f"{path}: no entries")
        logger.info("RAM tagging json %s: %d records, %d tags", path.name, len(self), self.num_tags)


def _find_one(root: Path, patterns: Sequence[str], what: str) -> Path:
    for pattern in patterns:
        found = sorted(root.glob(pattern))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DataError(f"several {what} files in {root} ({[p.name for p in found]}); name one explicitly")
    raise DataError(f"no {what} file in {root} (looked for {list(patterns)})")


class TaggingAnnotations(_TaggingSource):
    """A recognize-anything evaluation set: tag list + annotation file + images.

    Args:
        root: the dataset folder (reference layout ``datasets/<name>/`` holding ``*_annots.txt``,
            ``*_taglist.txt`` and the images in ``imgs/``), or the image folder itself.
        annotation_file: default: the one ``*_ram_annots.txt`` (else ``*_annots.txt``) in ``root``.
        taglist_file: default: the one ``*_ram_taglist.txt`` (else ``*_taglist.txt``) in ``root``.
        image_suffix: appended to the first field of a line unless it already ends in an image extension
            (OpenImages ``test/<id>`` → ``<image_dir>/test/<id>.jpg``; ImageNet ``ILSVRC2012_val_….JPEG`` as is).
        image_dir: default ``root/imgs`` when it exists, else ``root``.

    Targets follow the reference: every listed name sets all of its indices in the tag list; the index
    format gives 0-based indices. ``targets`` is the (N, T) uint8 matrix; unreadable images are skipped and
    counted by the pipeline (``bad_items``).
    """

    split = "test"

    def __init__(self, root: Union[str, os.PathLike], annotation_file: Optional[Union[str, os.PathLike]] = None,
                 taglist_file: Optional[Union[str, os.PathLike]] = None, image_suffix: str = ".jpg",
                 image_dir: Optional[Union[str, os.PathLike]] = None):
        super().__init__()
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"tagging dataset folder not found: {self.root}")
        annotation_file = Path(annotation_file) if annotation_file else \
            _find_one(self.root, ("*_ram_annots.txt", "*_annots.txt"), "annotation")
        taglist_file = Path(taglist_file) if taglist_file else \
            _find_one(self.root, ("*_ram_taglist.txt", "*_taglist.txt"), "tag list")
        self.annotation_file, self.taglist_file = annotation_file, taglist_file
        self.image_dir = Path(image_dir) if image_dir else \
            (self.root / "imgs" if (self.root / "imgs").is_dir() else self.root)
        try:
            self.tag_names = read_tag_list(taglist_file, skip_blank=True)
            images, self.targets = read_annotations(annotation_file, self.tag_names)
        except FileNotFoundError as e:
            raise DataError(str(e)) from e
        self.num_tags = len(self.tag_names)
        self.image_ids = images
        for name, row in zip(images, self.targets):
            file = name if Path(name).suffix.lower() in IMAGE_EXTENSIONS else name + image_suffix
            self._items.append((str(self.image_dir / file), "", np.flatnonzero(row).astype(np.int32)))
        logger.info("tagging annotations %s: %d images, %d tags", Path(annotation_file).name, len(self),
                    self.num_tags)


# ---- synthetic tags ----
#: English tag names of :class:`SyntheticTags`: colours, shapes, sizes, positions (SyntheticCaptions' words).
SYNTHETIC_TAGS = [*COLOURS, *SHAPES, *SIZES, *POSITIONS]
SYNTHETIC_TAGS_CHINESE = ["红色", "绿色", "蓝色", "黄色", "紫色", "橙色", "白色", "黑色",
                          "圆形", "正方形", "三角形", "十字形", "小", "大", "左边", "右边", "上方", "下方", "中间"]
#: package folder holding the synthetic vocabulary files (tag list, Chinese list, 0.5 thresholds)
SYNTHETIC_TAG_DIR = Path(__file__).resolve().parent / "synthetic_tags"
_SYNTHETIC_FILES = {"synthetic_tag_list.txt": SYNTHETIC_TAGS, "synthetic_tag_list_chinese.txt": SYNTHETIC_TAGS_CHINESE,
                    "synthetic_tag_list_threshold.txt": ["0.5"] * len(SYNTHETIC_TAGS)}


def write_synthetic_tag_files(directory: Union[str, os.PathLike] = SYNTHETIC_TAG_DIR) -> Path:
    """Write the synthetic vocabulary files (RAM's layout: one entry per line, no trailing newline)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, lines in _SYNTHETIC_FILES.items():
        (directory / name).write_text("\n".join(lines), encoding="utf-8")
    return directory


class SyntheticTags(_TaggingSource):
    """Multi-label view of :class:`~mindram.data.SyntheticCaptions`: same images and captions, and as targets
    the 4 words that describe each image — its colour, shape, size and position — out of the 19 tags of
    :data:`SYNTHETIC_TAGS` (Chinese names in :data:`SYNTHETIC_TAGS_CHINESE`; files for ``RAMConfig`` in
    ``mindram/data/synthetic_tags/``). ``(seed, split, index)`` fully determines a record.
    """

    tag_names = SYNTHETIC_TAGS
    tag_names_chinese = SYNTHETIC_TAGS_CHINESE
    num_tags = len(SYNTHETIC_TAGS)

    def __init__(self, num_samples: int, image_size: int = 64, seed: int = 0, split: str = "train"):
        super().__init__()
        self.captions = SyntheticCaptions(num_samples, image_size=image_size, seed=seed, split=split)
        self.split, self.num_samples, self.seed = self.captions.split, self.captions.num_samples, self.captions.seed
        self._offsets = np.cumsum([0, len(COLOURS), len(SHAPES), len(SIZES)])

    def __len__(self) -> int:
        return self.num_samples

    def attributes(self, index: int) -> Tuple[str, str, str, str]:
        """(colour, shape, size, position) of record ``index``: SyntheticCaptions' first draws, replayed
        (rendering and the caption are SyntheticCaptions' own; a unit test checks that the two agree)."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _SPLIT_IDS[self.split], int(index)]))
        colour = self.captions.colours[int(rng.integers(len(self.captions.colours)))]
        shape = self.captions.shapes[int(rng.integers(len(self.captions.shapes)))]
        size = tuple(SIZES)[int(rng.integers(len(SIZES)))]
        position = list(POSITIONS)[int(rng.integers(len(POSITIONS)))]
        return colour, shape, size, position

    def __getitem__(self, index: int) -> Record:
        image, caption, _ = self.captions[index]
        colour, shape, size, position = self.attributes(index)
        o = self._offsets
        label = np.asarray([list(COLOURS).index(colour), o[1] + SHAPES.index(shape),
                            o[2] + list(SIZES).index(size), o[3] + list(POSITIONS).index(position)], np.int32)
        return Record(image, [caption], label)


# ---- pipeline ----
def tagging_columns(teacher: bool = False, captions: bool = False, return_index: bool = False,
                    stored: Sequence[str] = ()) -> List[str]:
    """Column names produced by :func:`build_tagging_dataset`, in order (``stored``: the teacher feature
    store's columns, :class:`~mindram.data.teacher_features.StoredTeacherColumns`)."""
    wanted = {"pixel_values": True, "labels": True, "teacher_pixel_values": teacher, "input_ids": captions,
              **{name: True for name in stored}, "index": return_index}
    return [name for name, keep in wanted.items() if keep]


class _Flip:
    """Horizontal flip with probability 1/2 after ``transform`` (torchvision order: crop, then flip)."""

    def __init__(self, transform):
        self.transform, self.image_size = transform, transform.image_size
        self.image_processor = transform.image_processor

    def __call__(self, image, rng):
        out = self.transform(image, rng)
        return np.ascontiguousarray(out[..., ::-1]) if rng.random() < 0.5 else out


class _PairTransform:
    """Student and teacher views of one decoded image; the teacher's randomness is an independent stream."""

    def __init__(self, student, teacher, load):
        self.student, self.teacher, self.load = student, teacher, load

    def __call__(self, image, rng):
        teacher_rng = np.random.default_rng(int(rng.integers(2 ** 63)))
        image = self.load(image)
        return self.student(image, rng), self.teacher(image, teacher_rng)


class TaggingSampleLoader(ClipSampleLoader):
    """Map operation: sampler code → (pixels, multi-hot labels[, teacher pixels][, caption ids][, index]).

    Loading, bad-image substitution and the per-epoch accounting are :class:`ClipSampleLoader`'s."""

    def __init__(self, source, transform, plan, return_index, teacher_transform=None, tokenizer_fn=None,
                 context_length=77, teacher_features=None):
        self.with_teacher = teacher_transform is not None
        if self.with_teacher:
            transform = _PairTransform(transform, teacher_transform, transform.image_processor._load)
        super().__init__(source, transform, tokenizer_fn, context_length, 0, plan, return_index)
        self.num_tags = int(source.num_tags)
        self.teacher_features = teacher_features
        if teacher_features is not None and teacher_features.image:  # unreadable at extraction: substituted
            for index, reason in teacher_features.store.missing():
                self.stats.mark_bad(index, f"no stored teacher features ({reason})", self._bad_outcome)

    def _caption_ids(self, captions, epoch: int, index: int) -> np.ndarray:
        captions = record_captions(captions)
        pick = pick_caption(len(captions), self.seed, epoch, index)
        return np.asarray(self.tokenizer_fn([captions[pick]], context_length=self.context_length)[0], np.int32)

    def __call__(self, code) -> tuple:
        epoch, start = self.sampler.decode(code)
        index, record, pixels = self._load(epoch, start)
        teacher = None
        if self.with_teacher:
            pixels, teacher = pixels
        labels = np.zeros(self.num_tags, np.float32)
        labels[np.asarray(record.label, np.int64)] = 1.0
        row = [np.asarray(pixels, np.float32), labels]
        if teacher is not None:
            row.append(np.asarray(teacher, np.float32))
        if self.tokenizer_fn is not None:
            row.append(self._caption_ids(record.caption, epoch, index))
        if self.teacher_features is not None:
            row += self.teacher_features(index, epoch, self.seed)
        if self.return_index:
            row.append(np.asarray(index, np.int32))
        self._count(epoch)
        return tuple(row)


def _transform(processor, train: bool, scale, flip: bool):
    if not train:
        return EvalTransform(processor)
    transform = TrainTransform(processor, scale=scale)
    return _Flip(transform) if flip else transform


def build_tagging_dataset(source, image_processor, batch_size: int = 32, shuffle: bool = True,
                          num_workers: int = 2, drop_remainder: bool = True, seed: int = 0, *,
                          train_transform: bool = False, train_scale: Tuple[float, float] = (0.2, 1.0),
                          horizontal_flip: bool = False, teacher_processor=None,
                          tokenizer_fn: Optional[Callable] = None, context_length: int = 77,
                          start_epoch: int = 0, start_step: int = 0, return_index: bool = False,
                          python_multiprocessing: bool = False, teacher_features=None) -> msds.Dataset:
    """Batched multi-label pipeline over a tagging source (see the module docstring for the columns).

    Args:
        source: a tagging source (``num_tags``; records whose label is the array of positive tag indices).
        image_processor: the student's preprocessing (``RAMImageProcessor``: S×S squash, ImageNet statistics).
        train_transform: RandomResizedCrop(``train_scale``; the reference uses (0.2, 1.0)) with the processor's
            size/interpolation/statistics, then a horizontal flip when ``horizontal_flip`` (the reference's
            RandAugment is not applied); otherwise the processor's eval transform.
        teacher_processor: adds ``teacher_pixel_values`` preprocessed by it (e.g. the CLIP teacher's 224 px
            OpenAI-normalised view); with ``train_transform`` it is an independent augmentation draw.
        tokenizer_fn, context_length: adds ``input_ids`` (N, L) int32 of one caption per sample.
        teacher_features: stored teacher features instead of running the teacher (a
            :class:`~mindram.data.teacher_features.StoredTeacherColumns`): adds ``teacher_image_features`` (N, D)
            and/or ``teacher_text_features`` (N, D) of the caption each sample draws; records without stored
            features are substituted like unreadable images.
        batch_size, shuffle, num_workers, drop_remainder, seed, start_epoch, start_step, return_index,
        python_multiprocessing: as in :func:`~mindram.data.build_clip_dataset` (same sampler, resume and
            bad-image substitution).
    """
    if not hasattr(source, "num_tags") or not hasattr(source, "__getitem__"):
        raise ConfigError(f"source must be a tagging source (with num_tags), got {type(source).__name__}")
    plan = plan_pipeline(source, batch_size, shuffle, num_workers, drop_remainder, seed, start_epoch, start_step)
    teacher = None if teacher_processor is None else \
        _transform(teacher_processor, train_transform, train_scale, horizontal_flip)
    loader = TaggingSampleLoader(source, _transform(image_processor, train_transform, train_scale, horizontal_flip),
                                 plan, return_index, teacher_transform=teacher, tokenizer_fn=tokenizer_fn,
                                 context_length=context_length, teacher_features=teacher_features)
    columns = tagging_columns(teacher is not None, tokenizer_fn is not None, return_index,
                              teacher_features.names if teacher_features is not None else ())
    dataset = assemble_pipeline(loader, columns, plan, python_multiprocessing)
    logger.info("tagging dataset over %s (%d tags): %s", type(source).__name__, source.num_tags, plan.describe())
    return dataset

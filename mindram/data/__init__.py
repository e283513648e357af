"""Datasets for CLIP training and evaluation, built on ``mindspore.dataset``.

Sources (annotation parsers; ``len(src)``, ``src[i] -> Record(image, caption, label)``):
:class:`Flickr8k`, :class:`Cifar100`, :class:`CocoKarpathy`, :class:`CaptionTable`, :class:`ImageFolder`,
:class:`SyntheticCaptions`, :class:`WebDataset` (tar shards, streamed; training only), :class:`LaionFileList` (PaddleMIX's
laion.filelist, streamed the same way); multi-label tagging (:mod:`mindram.data.tagging`): :class:`RAMTaggingJson`,
:class:`TaggingAnnotations`, :class:`SyntheticTags`. Pipeline: :func:`build_clip_dataset` (decode + preprocess +
tokenise in workers, seeded shuffling, exact mid-epoch resume; an unreadable image is replaced by the next readable one
in training and flagged ``readable=False`` for evaluation, which leaves it out); :func:`build_tagging_dataset`
(the same machinery with multi-hot ``labels``).
"""
from .base import DataStats, Record, RecordSource
from .builder import build_clip_dataset, output_columns
from .caption_table import CaptionTable
from .cifar import Cifar100
from .coco_karpathy import CocoKarpathy
from .flickr8k import Flickr8k
from .image_folder import ImageFolder
from ..utils.safe_pickle import UnsafePickleError, load_restricted_pickle
from .sampler import ResumableSampler, shard_pipelines, steps_per_epoch
from .synthetic import SyntheticCaptions
from .tagging import RAMTaggingJson, SyntheticTags, TaggingAnnotations, build_tagging_dataset
from .transforms import EvalTransform, TrainTransform
from .laion_filelist import LaionFileList
from .webdataset import WebDataset

#: name -> source class (the registry wires these as MindFormerModuleType.DATASET).
DATASETS = {
    "flickr8k": Flickr8k,
    "cifar100": Cifar100,
    "coco_karpathy": CocoKarpathy,
    "caption_table": CaptionTable,
    "image_folder": ImageFolder,
    "synthetic_captions": SyntheticCaptions,
    "ram_tagging_json": RAMTaggingJson,
    "tagging_annotations": TaggingAnnotations,
    "synthetic_tags": SyntheticTags,
}

__all__ = ["DATASETS", "CaptionTable", "Cifar100", "CocoKarpathy", "DataStats", "EvalTransform", "Flickr8k",
           "ImageFolder", "RAMTaggingJson", "Record", "RecordSource", "ResumableSampler", "SyntheticCaptions",
           "SyntheticTags", "TaggingAnnotations", "TrainTransform", "UnsafePickleError", "WebDataset", "LaionFileList", "build_clip_dataset",
           "build_tagging_dataset", "load_restricted_pickle", "output_columns", "shard_pipelines", "steps_per_epoch"]

from ..registry import MindFormerModuleType, MindFormerRegister  # noqa: E402

for _name, _cls in DATASETS.items():
    MindFormerRegister.register_cls(_cls, MindFormerModuleType.DATASET, alias=_name)
# not a record source (no random access): streamed by build_webdataset_pipeline, training only
MindFormerRegister.register_cls(WebDataset, MindFormerModuleType.DATASET, alias="webdataset")
MindFormerRegister.register_cls(LaionFileList, MindFormerModuleType.DATASET, alias="laion_filelist")

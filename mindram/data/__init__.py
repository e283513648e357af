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
from ..utils.lazy import lazy_exports

_EXPORTS = {
    "DataStats": ".base", "Record": ".base", "RecordSource": ".base",
    "build_clip_dataset": ".builder", "output_columns": ".builder",
    "CaptionTable": ".caption_table", "Cifar100": ".cifar", "CocoKarpathy": ".coco_karpathy", "Flickr8k": ".flickr8k",
    "ImageFolder": ".image_folder", "UnsafePickleError": "..utils.safe_pickle",
    "load_restricted_pickle": "..utils.safe_pickle",
    "ResumableSampler": ".sampler", "shard_pipelines": ".sampler", "steps_per_epoch": ".sampler",
    "SyntheticCaptions": ".synthetic",
    "RAMTaggingJson": ".tagging", "SyntheticTags": ".tagging", "TaggingAnnotations": ".tagging",
    "build_tagging_dataset": ".tagging",
    "EvalTransform": ".transforms", "TrainTransform": ".transforms",
    "LaionFileList": ".laion_filelist", "WebDataset": ".webdataset",
}
_lazy_getattr, __dir__ = lazy_exports(__name__, {**_EXPORTS, "DATASETS": None})

#: name -> source class (the registry wires these as MindFormerModuleType.DATASET).
DATASET_NAMES = {
    "flickr8k": "Flickr8k",
    "cifar100": "Cifar100",
    "coco_karpathy": "CocoKarpathy",
    "caption_table": "CaptionTable",
    "image_folder": "ImageFolder",
    "synthetic_captions": "SyntheticCaptions",
    "ram_tagging_json": "RAMTaggingJson",
    "tagging_annotations": "TaggingAnnotations",
    "synthetic_tags": "SyntheticTags",
}

__all__ = ["DATASETS", "CaptionTable", "Cifar100", "CocoKarpathy", "DataStats", "EvalTransform", "Flickr8k",
           "ImageFolder", "RAMTaggingJson", "Record", "RecordSource", "ResumableSampler", "SyntheticCaptions",
           "SyntheticTags", "TaggingAnnotations", "TrainTransform", "UnsafePickleError", "WebDataset", "LaionFileList", "build_clip_dataset",
           "build_tagging_dataset", "load_restricted_pickle", "output_columns", "shard_pipelines", "steps_per_epoch"]


def __getattr__(name):
    if name == "DATASETS":   # {name: source class}, imported at first use
        globals()["DATASETS"] = {alias: _lazy_getattr(cls) for alias, cls in DATASET_NAMES.items()}
        return globals()["DATASETS"]
    return _lazy_getattr(name)


def register():
    """Register the dataset classes under their names and aliases (the registry calls this before its first
    lookup). Streamed sources (WebDataset, LaionFileList: no random access) are training-only."""
    from ..registry import MindFormerModuleType, MindFormerRegister  # pylint: disable=import-outside-toplevel
    for alias, cls in DATASET_NAMES.items():
        MindFormerRegister.register_cls(__getattr__(cls), MindFormerModuleType.DATASET, alias=alias)
    MindFormerRegister.register_cls(__getattr__("WebDataset"), MindFormerModuleType.DATASET, alias="webdataset")
    MindFormerRegister.register_cls(__getattr__("LaionFileList"), MindFormerModuleType.DATASET, alias="laion_filelist")

"""Evaluation metrics: top-k accuracy, image-text retrieval recall@K, multi-label tagging mAP/CP/CR
(functions + streaming metrics)."""
from ..utils.lazy import lazy_exports

_EXPORTS = {
    "TopKAccuracy": ".classification", "topk_accuracy": ".classification", "topk_hits": ".classification",
    "MultiLabelTaggingMetric": ".multilabel", "average_precision": ".multilabel", "precision_recall": ".multilabel",
    "read_annotations": ".multilabel", "read_taglist": ".multilabel", "tagging_metrics": ".multilabel",
    "RetrievalRecall": ".retrieval", "retrieval_recall_at_k": ".retrieval",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["MultiLabelTaggingMetric", "TopKAccuracy", "RetrievalRecall", "average_precision", "precision_recall",
           "read_annotations", "read_taglist", "retrieval_recall_at_k", "tagging_metrics", "topk_accuracy", "topk_hits"]


def register():
    """Register the streaming metrics (the registry calls this before its first lookup)."""
    for name in ("TopKAccuracy", "MultiLabelTaggingMetric", "RetrievalRecall"):   # registered where defined
        __getattr__(name)

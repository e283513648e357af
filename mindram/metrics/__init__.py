"""Evaluation metrics: top-k accuracy, image-text retrieval recall@K, multi-label tagging mAP/CP/CR
(functions + streaming metrics)."""
from .classification import TopKAccuracy, topk_accuracy, topk_hits
from .multilabel import (MultiLabelTaggingMetric, average_precision, precision_recall, read_annotations,
                         read_taglist, tagging_metrics)
from .retrieval import RetrievalRecall, retrieval_recall_at_k

__all__ = ["MultiLabelTaggingMetric", "TopKAccuracy", "RetrievalRecall", "average_precision", "precision_recall",
           "read_annotations", "read_taglist", "retrieval_recall_at_k", "tagging_metrics", "topk_accuracy", "topk_hits"]

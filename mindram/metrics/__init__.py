"""Evaluation metrics: top-k accuracy and image-text retrieval recall@K (functions + streaming metrics)."""
from .classification import TopKAccuracy, topk_accuracy, topk_hits
from .retrieval import RetrievalRecall, retrieval_recall_at_k

__all__ = ["TopKAccuracy", "RetrievalRecall", "topk_accuracy", "topk_hits", "retrieval_recall_at_k"]

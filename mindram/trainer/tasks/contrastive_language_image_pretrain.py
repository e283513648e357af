"""Task ``contrastive_language_image_pretrain``: train CLIP with the symmetric contrastive loss; evaluate
image↔text retrieval recall@1/5/10 on a held-out split (and zero-shot accuracy when it has class labels)."""
from ...registry import MindFormerModuleType, MindFormerRegister
from .clip_eval import dataset_features, retrieval_metrics, skipped_metrics, zero_shot_metrics
from .image_text import ImageTextTrainer
from .zero_shot_image_classification import zero_shot_predict


@MindFormerRegister.register(MindFormerModuleType.TRAINER)
class ContrastiveLanguageImagePretrainTrainer(ImageTextTrainer):
    """Contrastive training of an image–text dual encoder; retrieval (and zero-shot) evaluation."""

    name = "contrastive_language_image_pretrain"
    default_config = "clip/run_clip_vit_b_32_pretrain_flickr8k.yaml"
    default_metric_for_best_model = "image_to_text_R@1"

    def evaluate(self):
        """Retrieval recall@K (image→text, text→image); zero-shot top-1/5 when the eval set has labels.
        Unreadable images are left out, with their captions and labels (``num_skipped``, ``skipped``)."""
        source = self.source("eval_dataset")
        features = dataset_features(self, source, self.args.eval_batch_size or self.args.batch_size)
        metrics = retrieval_metrics(features)
        if features["label"] is not None:
            metrics.update(zero_shot_metrics(self, features, source))
        metrics.update(skipped_metrics(features))
        self.save_metrics("eval", metrics)
        return metrics

    def predict(self, input_data, top_k=None):
        """Zero-shot scores of images against ``predict.candidate_labels`` (or the eval set's classes)."""
        return zero_shot_predict(self, input_data, top_k)

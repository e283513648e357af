"""Task ``zero_shot_image_classification``: class embeddings from one or many templates; top-1/top-5."""
from ...errors import ConfigError
from ...registry import MindFormerModuleType, MindFormerRegister
from .clip_eval import (class_names_without_images, dataset_features, resolve_templates, skipped_metrics,
                        zero_shot_metrics)
from .image_text import ImageTextTrainer


def zero_shot_predict(task, input_data, top_k=None):
    """Rank candidate labels for each input image; MindFormers' output shape. In a list, an image that cannot
    be read gets ``None`` (and a warning naming its index and path), never another image's result; a single
    unreadable input raises."""
    from ...pipeline import pipeline
    predict_cfg = task.config.get("predict") or {}
    labels = predict_cfg.get("candidate_labels")
    if not labels:
        labels = class_names_without_images(task)
    templates = resolve_templates((task.config.get("zero_shot") or {}).get("templates"))
    template = predict_cfg.get("hypothesis_template") or templates[0]
    classifier = pipeline("zero_shot_image_classification", model=task.model, image_processor=task.image_processor(),
                          tokenizer=task.tokenizer(), candidate_labels=list(labels), hypothesis_template=template)
    return classifier(input_data, top_k=top_k or predict_cfg.get("top_k") or min(5, len(labels)))


@MindFormerRegister.register(MindFormerModuleType.TRAINER)
class ZeroShotImageClassificationTrainer(ImageTextTrainer):
    """Zero-shot classification with an image–text dual encoder: evaluation and prediction, no training."""

    name = "zero_shot_image_classification"
    default_config = "clip/run_clip_vit_b_32_zero_shot_image_classification_cifar100.yaml"
    requires_pretrained_weights = True
    cache_zero_shot_classifier = True  # evaluations of the same weights encode their prompts once

    def train(self):
        raise ConfigError("task 'zero_shot_image_classification' has no training stage; train with "
                          "'contrastive_language_image_pretrain' and evaluate here")

    def evaluate(self):
        """Zero-shot top-1/top-5 on the readable images of ``eval_dataset`` (unreadable ones are left out and
        reported: ``num_skipped``, ``skipped``)."""
        source = self.source("eval_dataset")
        features = dataset_features(self, source, self.args.eval_batch_size or self.args.batch_size,
                                    with_text=False)
        metrics = zero_shot_metrics(self, features, source)
        metrics.update(skipped_metrics(features))
        self.save_metrics("eval", metrics)
        return metrics

    def predict(self, input_data, top_k=None):
        return zero_shot_predict(self, input_data, top_k)

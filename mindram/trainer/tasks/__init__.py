"""One module per task; each registers its trainer class under MindFormerModuleType.TRAINER.

:class:`BaseTrainer` (``base.py``) holds what every task shares; :class:`ImageTextTrainer` (``image_text.py``)
the (image, caption) data and contrastive loss of the dual-encoder tasks.
"""
from .base import BaseTrainer
from .contrastive_language_image_pretrain import ContrastiveLanguageImagePretrainTrainer
from .image_tagging import ImageTaggingTrainer
from .image_text import ImageTextTrainer
from .zero_shot_image_classification import ZeroShotImageClassificationTrainer

#: MindFormers task names → trainer classes of this package (``Trainer`` also finds trainers registered elsewhere)
TASKS = {cls.name: cls for cls in (ContrastiveLanguageImagePretrainTrainer, ZeroShotImageClassificationTrainer,
                                   ImageTaggingTrainer)}

__all__ = ["TASKS", "BaseTrainer", "ContrastiveLanguageImagePretrainTrainer", "ImageTaggingTrainer",
           "ImageTextTrainer", "ZeroShotImageClassificationTrainer"]

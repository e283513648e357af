"""One module per task; each registers its trainer class under MindFormerModuleType.TRAINER."""
from .contrastive_language_image_pretrain import ContrastiveLanguageImagePretrainTrainer
from .image_tagging import ImageTaggingTrainer
from .zero_shot_image_classification import ZeroShotImageClassificationTrainer

#: MindFormers task names → trainer classes
TASKS = {cls.name: cls for cls in (ContrastiveLanguageImagePretrainTrainer, ZeroShotImageClassificationTrainer,
                                   ImageTaggingTrainer)}

__all__ = ["TASKS", "ContrastiveLanguageImagePretrainTrainer", "ImageTaggingTrainer",
           "ZeroShotImageClassificationTrainer"]

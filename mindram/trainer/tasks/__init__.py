"""One module per task; each registers its trainer class under MindFormerModuleType.TRAINER."""
from .contrastive_language_image_pretrain import ContrastiveLanguageImagePretrainTrainer
from .zero_shot_image_classification import ZeroShotImageClassificationTrainer

#: MindFormers task names → trainer classes
TASKS = {cls.name: cls for cls in (ContrastiveLanguageImagePretrainTrainer, ZeroShotImageClassificationTrainer)}

__all__ = ["TASKS", "ContrastiveLanguageImagePretrainTrainer", "ZeroShotImageClassificationTrainer"]

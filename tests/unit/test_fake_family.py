"""The core is family-neutral: a tiny model family defined and registered in this file alone (config, model,
image processor, tokenizer) trains, evaluates and predicts through ``Trainer`` and runs in ``pipeline()``,
with no change to framework code."""
import dataclasses
import json

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn, ops
from PIL import Image

from mindram.config import MindFormerConfig
from mindram.errors import ConfigError
from mindram.models.configuration_utils import PretrainedConfig
from mindram.models.image_processing_utils import BaseImageProcessor
from mindram.models.modeling_utils import PreTrainedModel
from mindram.pipeline import pipeline
from mindram.registry import MindFormerModuleType, MindFormerRegister
from mindram.trainer import Trainer

CAPTION_WORDS = ("red", "green", "blue", "yellow", "circle", "square", "triangle", "star")


@dataclasses.dataclass
class FakeConfig(PretrainedConfig):
    """A dual encoder small enough to train in a second; no catalog folder (names never resolve)."""

    family = "fake_dual_encoder"
    arch_name = "FakeDualEncoder"

    image_size: int = 16
    embed_dim: int = 8
    vocab_size: int = 16
    context_length: int = 6


class FakeImageProcessor(BaseImageProcessor):
    """Resize to S x S (bilinear), scale to [-1, 1]; ``(3, S, S)`` per image."""

    config_class = FakeConfig

    def __init__(self, image_size=16):
        self.image_size = int(image_size)

    @classmethod
    def from_dict(cls, cfg):
        return cls(**cfg)

    def to_dict(self):
        return {"image_size": self.image_size}

    def preprocess(self, image):
        image = Image.open(image) if isinstance(image, str) else image
        image = Image.fromarray(np.asarray(image, np.uint8)) if isinstance(image, np.ndarray) else image
        image = image.convert("RGB").resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        return (np.asarray(image, np.float32).transpose(2, 0, 1) / 127.5 - 1.0).astype(np.float32)

    def __call__(self, images):
        return np.stack([self.preprocess(im) for im in (images if isinstance(images, list) else [images])])


class FakeTokenizer:
    """Word ids 1..len(CAPTION_WORDS) (0 for any other word and for padding), ``(N, 6)`` int32."""

    def __call__(self, texts):
        out = np.zeros((len(texts), FakeConfig.context_length), np.int32)
        for row, text in enumerate(texts):
            ids = [CAPTION_WORDS.index(w) + 1 for w in text.lower().replace(".", " ").split() if w in CAPTION_WORDS]
            out[row, :len(ids[:FakeConfig.context_length])] = ids[:FakeConfig.context_length]
        return out


class FakeDualEncoder(PreTrainedModel):
    """Linear image tower over pooled pixels, bag-of-words text tower, CLIP-style logits."""

    config_class = FakeConfig
    family = FakeConfig.family
    image_processor_class = FakeImageProcessor
    tokenizer_class = FakeTokenizer

    def __init__(self, config=None):
        super().__init__(config or FakeConfig())
        dim = self.config.embed_dim
        self.image_proj = nn.Dense(3 * 16, dim)
        self.token_embedding = nn.Embedding(self.config.vocab_size, dim)
        self.logit_scale = Parameter(Tensor(np.full((1,), np.log(10.0), np.float32)), name="logit_scale")

    @property
    def context_length(self):
        return self.config.context_length

    def image_features(self, pixel_values):
        pooled = pixel_values.reshape(pixel_values.shape[0], 3, 4, 4, 4, 4).mean(axis=(3, 5))  # 16 px -> 4 x 4
        return self.image_proj(pooled.reshape(pixel_values.shape[0], -1))

    def text_features(self, input_ids):
        return self.token_embedding(input_ids.astype(ms.int32)).sum(axis=1)

    def construct(self, pixel_values, input_ids):
        image = ops.L2Normalize(axis=-1)(self.image_features(pixel_values))
        text = ops.L2Normalize(axis=-1)(self.text_features(input_ids))
        logits = ops.exp(self.logit_scale) * ops.matmul(image, text.T)
        return logits, logits.T

    def get_image_features(self, pixel_values):
        return self.image_features(Tensor(np.asarray(pixel_values), ms.float32))

    def get_text_features(self, input_ids):
        return self.text_features(Tensor(np.asarray(input_ids), ms.int32))


for _obj, _kind in ((FakeDualEncoder, MindFormerModuleType.MODELS), (FakeConfig, MindFormerModuleType.CONFIG),
                    (FakeImageProcessor, MindFormerModuleType.PROCESSOR),
                    (FakeTokenizer, MindFormerModuleType.TOKENIZER)):
    MindFormerRegister.register_cls(_obj, _kind)


def run_config(output_dir):
    colours, shapes = ["red", "green", "blue", "yellow"], ["circle", "square"]
    data = {"type": "SyntheticCaptions", "image_size": 16, "colours": colours, "shapes": shapes}
    return MindFormerConfig({
        "seed": 0, "output_dir": str(output_dir),
        "trainer": {"type": "ContrastiveLanguageImagePretrainTrainer"},
        "model": {"arch": {"type": "FakeDualEncoder"}, "model_config": {"type": "FakeConfig", "embed_dim": 8}},
        "processor": {"image_processor": {"type": "FakeImageProcessor"}, "tokenizer": {"type": "FakeTokenizer"}},
        "train_dataset": {"data_loader": {**data, "num_samples": 32, "split": "train"}, "shuffle": True},
        "eval_dataset": {"data_loader": {**data, "num_samples": 16, "split": "test"}},
        "runner_config": {"batch_size": 8, "max_steps": 6, "logging_steps": 2, "num_workers": 1,
                          "train_transform": False, "save_steps": None, "keep_checkpoint_max": 1},
        "optimizer": {"type": "AdamWeightDecay", "weight_decay": 0.0},
        "lr_schedule": {"type": "ConstantWithWarmUpLR", "learning_rate": 1.0e-2, "warmup_steps": 0},
        "predict": {"candidate_labels": ["red circle", "blue square"], "top_k": 2},
    })


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("fake_family")
    trainer = Trainer(args=run_config(output_dir))
    return trainer, trainer.train(), output_dir


def test_trainer_trains_evaluates_and_predicts_the_fake_family(trained):
    trainer, summary, output_dir = trained
    assert isinstance(trainer.model, FakeDualEncoder)
    assert isinstance(trainer.task.image_processor(), FakeImageProcessor)
    assert summary["global_step"] == 6 and all(np.isfinite(h["loss"]) for h in summary["history"])
    reloaded = FakeDualEncoder.from_pretrained(output_dir / "final")
    np.testing.assert_allclose(reloaded.state_dict()["image_proj.weight"],
                               trainer.model.state_dict()["image_proj.weight"])
    metrics = trainer.evaluate()
    assert metrics["num_images"] == 16 and metrics["num_classes"] == 8 and "zero_shot_top1" in metrics
    assert json.loads((output_dir / "eval_metrics.json").read_text())["num_images"] == 16
    image = (np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)
    (result,) = trainer.predict(image)
    assert {r["label"] for r in result} == {"red circle", "blue square"}


def test_pipelines_take_the_fake_model(trained):
    model = trained[0].model
    image = (np.random.default_rng(1).random((20, 24, 3)) * 255).astype(np.uint8)
    classifier = pipeline("zero_shot_image_classification", model=model, candidate_labels=["red star", "green"])
    assert classifier.model is model and isinstance(classifier.image_processor, FakeImageProcessor)
    (scores,) = classifier(image)
    assert sum(s["score"] for s in scores) == pytest.approx(1.0)
    features = pipeline("feature_extraction", model=model)
    images, texts = features(images=[image, image], texts=["red circle", "blue"])
    assert images.shape == (2, 8) and texts.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)


def test_processor_from_a_saved_directory(trained):
    processor = FakeImageProcessor.from_pretrained(trained[2] / "final")
    assert processor.image_size == 16


def test_processor_section_builds_through_the_registry(tmp_path):
    config = run_config(tmp_path / "run")
    config.processor.image_processor = {"type": "FakeImageProcessr"}
    with pytest.raises(ConfigError, match="FakeImageProcessor"):
        Trainer(args=config)
    config = run_config(tmp_path / "run")
    config.processor = MindFormerConfig({"type": "FakeImageProcessor", "image_processor": {"image_size": 16},
                                         "tokenizer": {"type": "FakeTokenizer"}})
    trainer = Trainer(args=config)
    assert isinstance(trainer.task.image_processor(), FakeImageProcessor)
    assert isinstance(trainer.task.tokenizer(), FakeTokenizer)

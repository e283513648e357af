"""run_mindformer.py end to end on the synthetic tagging demo config (tiny overrides): train, eval, predict."""
import numpy as np
from PIL import Image

from mindram.data.tagging import SYNTHETIC_TAGS, SyntheticTags
from tests.conftest import ROOT
from tests.st.test_run_mindformer import last_json, run

DEMO = ROOT / "configs" / "ram" / "run_ram_demo_synthetic.yaml"
TINY = [
    "model.model_config.image_size=32",
    "model.model_config.vision_config={image_size: 32, patch_size: 4, embed_dim: 16, depths: [1, 1], "
    "num_heads: [1, 2], window_size: 4, drop_path_rate: 0.0}",
    "model.model_config.head_config={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, "
    "intermediate_size: 64}",
    "model.model_config.label_embed_dim=16",
    "tagging.teacher={projection_dim: 16, vision_config: {image_size: 16, patch_size: 8, hidden_size: 16, "
    "num_hidden_layers: 1, num_attention_heads: 1, intermediate_size: 32}, text_config: {vocab_size: 49408, "
    "max_position_embeddings: 8, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 1, "
    "intermediate_size: 32}}",
    "train_dataset.data_loader.num_samples=64", "train_dataset.data_loader.image_size=32",
    "eval_dataset.data_loader.num_samples=32", "eval_dataset.data_loader.image_size=32",
    "runner_config.batch_size=8", "runner_config.eval_batch_size=16", "runner_config.max_steps=6",
    "runner_config.logging_steps=2", "runner_config.save_steps=3", "runner_config.num_workers=1",
]


def test_train_eval_predict(tmp_path):
    out = tmp_path / "run"
    # run from another directory: the demo's tag files resolve inside the package
    trained = run("--config", DEMO, "--run_mode", "train", "--output_dir", out, "--options", *TINY, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    summary = last_json(trained.stdout)
    assert summary["global_step"] == 6 and np.isfinite(summary["final_loss"])
    assert {"mAP", "CP", "CR", "CF1"} <= set(summary["eval"]) and summary["eval"]["num_images"] == 32
    assert (out / "checkpoint-6" / "trainer_state.json").is_file() and (out / "final" / "config.yaml").is_file()
    assert (out / "train_metrics.json").is_file() and (out / "eval_metrics.json").is_file()

    evaluated = run("--config", DEMO, "--run_mode", "eval", "--output_dir", tmp_path / "eval",
                    "--load_checkpoint", out / "final", "--options", *TINY)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert last_json(evaluated.stdout)["mAP"] == summary["eval"]["mAP"]

    image = tmp_path / "shape.png"
    Image.fromarray(SyntheticTags(1, image_size=32)[0].image).save(image)
    predicted = run("--config", DEMO, "--run_mode", "predict", "--predict_data", image, image, "--top_k", "2",
                    "--load_checkpoint", out / "final", "--output_dir", tmp_path / "pred", "--options", *TINY,
                    "tagging.threshold=0.0")  # every tag passes; top_k keeps the best two
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    result = last_json(predicted.stdout)
    assert len(result) == 2 and len(result[0]) == 2 and result[0] == result[1]
    assert {"label", "label_cn", "score", "class_id"} == set(result[0][0]) and result[0][0]["label"] in SYNTHETIC_TAGS


def test_tagging_config_error_is_reported_before_work(tmp_path):
    result = run("--config", DEMO, "--run_mode", "train", "--output_dir", tmp_path, "--options",
                 "tagging.layer_decay=2.0")
    assert result.returncode == 2
    assert "tagging: layer_decay" in result.stderr
    assert not any(tmp_path.iterdir())

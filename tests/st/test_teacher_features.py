"""Offline teacher features (docs/ram.md#offline-teacher-features): ``python -m mindram.extract_teacher_features``
writes the store, training reads it and gives the online teacher's losses, a store that does not match the
configured teacher or training set is refused with one line."""
import json

import numpy as np
import pytest
import yaml
from PIL import Image

from mindram.data.tagging import SyntheticTags
from mindram.errors import ConfigError
from mindram.extract_teacher_features import PROG, main
from mindram.trainer.trainer import Trainer
from mindram.utils.cli import run_cli
from tests.conftest import ROOT

DEMO = ROOT / "configs" / "ram" / "run_ram_demo_synthetic.yaml"
TEACHER = {"projection_dim": 16,
           "vision_config": {"image_size": 16, "patch_size": 8, "hidden_size": 16, "num_hidden_layers": 1,
                             "num_attention_heads": 1, "intermediate_size": 32},
           "text_config": {"vocab_size": 49408, "max_position_embeddings": 8, "hidden_size": 16,
                           "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 32}}
NUM_RECORDS = 17  # 16 images + one unreadable


def write_dataset(root, count=NUM_RECORDS, name="train_ram.json"):
    """RAMTaggingJson over PNGs of SyntheticTags (two captions each) and one corrupt file (record 5)."""
    root.mkdir(exist_ok=True)
    synthetic, entries = SyntheticTags(count, image_size=32, seed=3), []
    for i in range(count):
        record = synthetic[i]
        path = root / f"img_{i}.png"
        if i == 5:
            path.write_bytes(b"not a png")
        elif not path.exists():
            Image.fromarray(record.image).save(path)
        entries.append({"image_path": path.name, "caption": [record.caption[0], f"picture {i}"],
                        "union_label_id": record.label.tolist()})
    (root / name).write_text(json.dumps(entries), encoding="utf-8")
    return root / name


def write_config(path, data_dir, annotation="train_ram.json", **tagging):
    cfg = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    cfg["model"]["model_config"].update(
        image_size=32, label_embed_dim=16,
        vision_config={"image_size": 32, "patch_size": 4, "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2],
                       "window_size": 4, "drop_path_rate": 0.0},
        head_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64})
    cfg["tagging"].update(teacher=TEACHER, **tagging)
    cfg["train_dataset"] = {"data_loader": {"type": "RAMTaggingJson", "root": str(data_dir), "num_tags": 19,
                                            "annotation_file": str(data_dir / annotation)}, "shuffle": True}
    cfg["eval_dataset"]["data_loader"].update(num_samples=8, image_size=32)
    cfg["runner_config"].update(batch_size=4, max_steps=3, logging_steps=1, save_steps=None, num_workers=1)
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def train_losses(config, out_dir, **overrides):
    Trainer(args=str(config), overrides={"output_dir": str(out_dir), **overrides}).train()
    return [json.loads(line)["loss"] for line in (out_dir / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("teacher_features")
    data = tmp / "data"
    write_dataset(data)
    config = write_config(tmp / "run.yaml", data)
    store = tmp / "store"
    assert run_cli(main, ["--config", str(config), "--output", str(store), "--batch_size", "5"], prog=PROG) == 0
    return tmp, data, config, store


def test_store_gives_the_online_losses(extracted):
    tmp, _, config, store = extracted
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["complete"] and manifest["dataset"]["num_records"] == NUM_RECORDS
    assert manifest["image"]["num_features"] == NUM_RECORDS - 1 and manifest["image"]["skipped"][0]["record"] == 5
    assert manifest["num_caption_features"] == 2 * NUM_RECORDS and manifest["text"] is True

    online = train_losses(config, tmp / "online")
    stored = train_losses(config, tmp / "stored", **{"tagging.teacher_features": str(store)})
    assert len(online) == len(stored) == 3
    print(f"losses online {online}, from the store {stored}, "
          f"max abs diff {np.abs(np.subtract(stored, online)).max():.2e}")
    np.testing.assert_allclose(stored, online, rtol=0, atol=1e-5)

    # tagging.teacher null: the store is not checked against a teacher, and the batches are the same
    batches = []
    for teacher in (None, TEACHER):
        task = Trainer(args=str(config), overrides={"tagging.teacher_features": str(store),
                                                    "tagging.teacher": teacher}).task
        data = task.dataset("train_dataset", 4, True)
        assert task.teacher is None and task.uses_distillation and task.uses_alignment
        assert data.get_col_names() == ["pixel_values", "labels", "teacher_image_features", "teacher_text_features"]
        batches.append(next(data.create_tuple_iterator(num_epochs=1, output_numpy=True)))
    for with_null, with_teacher in zip(*batches):
        np.testing.assert_array_equal(with_null, with_teacher)

    # a complete store is resumed, not recomputed
    before = (store / "image" / "shard_00000.npy").stat().st_mtime_ns
    assert run_cli(main, ["--config", str(config), "--output", str(store), "--batch_size", "5"], prog=PROG) == 0
    assert (store / "image" / "shard_00000.npy").stat().st_mtime_ns == before


def _check(config, store, **overrides):
    task = Trainer(args=str(config), overrides={"tagging.teacher_features": str(store), **overrides}).task
    return task.teacher_features


def test_mismatched_store_is_refused(extracted):
    tmp, data, config, store = extracted
    other = {**TEACHER, "text_config": {**TEACHER["text_config"], "num_hidden_layers": 2}}
    with pytest.raises(ConfigError, match=r"extracted with teacher .*\(weights_sha256 [0-9a-f]{16}\), the "
                                          r"configured tagging.teacher"):
        _check(config, store, **{"tagging.teacher": other})
    write_dataset(data, NUM_RECORDS - 1, "fewer_ram.json")
    with pytest.raises(ConfigError, match=f"{NUM_RECORDS} records at extraction, the training set has "
                                          f"{NUM_RECORDS - 1}"):
        _check(config, store, **{"train_dataset.data_loader.annotation_file": str(data / "fewer_ram.json")})
    Image.new("RGB", (40, 40), (1, 2, 3)).save(data / "img_3.png")
    with pytest.raises(ConfigError, match=r"record 3 \(.*img_3.png\): size"):
        _check(config, store)


def test_cli_errors_are_one_line(extracted, capsys, tmp_path):
    _, _, config, store = extracted
    cases = [(["--config", str(config)], "the following arguments are required: --output"),
             (["--config", str(config), "--output", str(tmp_path / "s"), "--options", "tagging.teacher=null"],
              "no teacher configured"),
             (["--config", str(config), "--output", str(store), "--options",
               "tagging.teacher.text_config.num_hidden_layers=2"], "holds teacher features of another teacher"),
             (["--config", str(config), "--output", str(store), "--batch_size", "0"], "--batch_size")]
    for argv, message in cases:
        assert run_cli(main, argv, prog=PROG) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith(PROG)]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert json.loads((store / "manifest.json").read_text())["complete"]  # the refused runs left the store alone


@pytest.mark.parametrize("damage", ["int32_vectors", "one_row_more"])
def test_a_store_with_damaged_vector_shards_is_refused(extracted, tmp_path, damage):
    """The store's vector shards are read through the embeddings store's checks: integer vectors (read as 0s
    before) and a shard with a row more than its ids are refused in one line naming the shard."""
    import shutil
    from mindram.data.teacher_features import TeacherFeatureStore
    store = tmp_path / "store"
    shutil.copytree(extracted[3], store)
    shard = store / "image" / "shard_00000.npy"
    vectors = np.load(shard)
    np.save(shard, vectors.astype(np.int32) if damage == "int32_vectors" else np.vstack([vectors, vectors[:1]]))
    with pytest.raises(ConfigError, match=r"is damaged .*shard_00000\.npy") as info:
        TeacherFeatureStore(store)
    assert "\n" not in str(info.value)

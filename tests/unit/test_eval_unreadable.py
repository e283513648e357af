"""CLIP evaluation never counts an item it could not read: unreadable images (random bytes, truncated JPEG, a
text file, a missing file) are left out of zero-shot accuracy and retrieval recall — labels and captions
alike — and reported (``num_skipped``, ``skipped``); predict reports them per item; nothing readable is an error."""
import json
import logging

import numpy as np
import pytest

from data_fixtures import make_caption_table, write_image
from mindram.data import CaptionTable, CocoKarpathy, ImageFolder
from mindram.errors import DataError
from mindram.metrics import retrieval_recall_at_k
from mindram.models.clip.tokenizer import tokenize
from mindram.models.clip.zero_shot import build_zero_shot_classifier
from mindram.trainer import Trainer
from tests.unit.test_trainer import tiny_run_config

CLASSES = ("blue", "green", "red", "white")


def write_bad_images(paths):
    """Three kinds of unreadable file: random bytes, a JPEG cut in half, a text file with an image suffix."""
    random_bytes, truncated, text = paths
    random_bytes.write_bytes(np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8).tobytes())
    full = write_image(truncated, seed=99, size=(64, 48)).read_bytes()
    truncated.write_bytes(full[:len(full) // 2])
    text.write_text("these are notes, not an image\n", encoding="utf-8")


def image_features(trainer, paths):
    """L2-normalised image features of ``paths``, computed one image at a time outside the data pipeline."""
    proc = trainer.task.image_processor()
    feats = np.concatenate([trainer.model.get_image_features(proc.preprocess(p)[None]).asnumpy() for p in paths])
    return feats / np.linalg.norm(feats, axis=1, keepdims=True)


@pytest.fixture
def folder(tmp_path):
    """4 classes x 4 readable images, plus 3 unreadable files sorted in between the readable ones."""
    root = tmp_path / "folder"
    for c, name in enumerate(CLASSES):
        for k in range(4):
            write_image(root / name / f"img{2 * k}.jpg", seed=10 * c + k, size=(40 + 8 * c, 36))
    write_bad_images([root / "blue" / "img3.jpg", root / "green" / "img1.jpg", root / "red" / "img5.png"])
    return root


def test_zero_shot_eval_skips_unreadable_images(tmp_path, folder, caplog):
    src = ImageFolder(folder)
    readable = [(r.image, r.label) for r in src if "img3" not in r.image and "img1" not in r.image
                and "img5" not in r.image]
    assert len(src) == 19 and len(readable) == 16
    trainer = Trainer(args=tiny_run_config(tmp_path / "out", eval_batch_size=5),
                      task="zero_shot_image_classification", eval_dataset=src)
    with caplog.at_level(logging.WARNING):
        metrics = trainer.evaluate()

    classifier = build_zero_shot_classifier(trainer.model, [c for c in CLASSES], ["a photo of a {}."])
    logits = image_features(trainer, [p for p, _ in readable]) @ classifier
    expected = float(np.mean(np.argmax(logits, axis=1) == np.array([label for _, label in readable])))
    assert metrics["num_images"] == 16 and metrics["num_skipped"] == 3
    assert metrics["zero_shot_top1"] == pytest.approx(expected)
    assert sorted(metrics["skipped"]) == sorted(str(p) for p in (folder / "blue" / "img3.jpg",
                                                                  folder / "green" / "img1.jpg",
                                                                  folder / "red" / "img5.png"))
    assert any("3 of 19" in r.getMessage() and "img3.jpg" in r.getMessage() for r in caplog.records)


def test_retrieval_eval_drops_images_and_their_captions(tmp_path):
    root = tmp_path / "coco"
    entries = [{"image": f"imgs/{i}.jpg", "caption": [f"photo {i} view {k}" for k in range(2 + i % 2)]}
               for i in range(10)]
    (root / "imgs").mkdir(parents=True)
    (root / "coco_karpathy_test.json").write_text(json.dumps(entries), encoding="utf-8")
    for i in (0, 2, 3, 5, 7, 9):
        write_image(root / f"imgs/{i}.jpg", seed=i, size=(36 + 4 * i, 40))
    write_bad_images([root / "imgs/1.jpg", root / "imgs/4.jpg", root / "imgs/6.jpg"])  # imgs/8.jpg is missing
    src = CocoKarpathy(root, split="test")
    trainer = Trainer(args=tiny_run_config(tmp_path / "out", eval_batch_size=4), eval_dataset=src)
    metrics = trainer.evaluate()

    keep = [0, 2, 3, 5, 7, 9]
    images = image_features(trainer, [src[i].image for i in keep])
    captions = [(n, c) for n, i in enumerate(keep) for c in src[i].caption]
    ids = tokenize([c for _, c in captions], context_length=trainer.task.context_length)
    texts = trainer.model.get_text_features(ids).asnumpy()
    expected = retrieval_recall_at_k(images, texts, np.array([n for n, _ in captions]), ks=(1, 5, 10))
    assert metrics["num_images"] == 6 and metrics["num_texts"] == len(captions) == 16
    assert metrics["num_skipped"] == 4
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key
    assert sorted(metrics["skipped"]) == [str(root / f"imgs/{i}.jpg") for i in (1, 4, 6, 8)]


def test_eval_with_nothing_readable_is_an_error(tmp_path):
    root = tmp_path / "table"
    (root / "imgs").mkdir(parents=True)
    write_bad_images([root / "imgs/a.jpg", root / "imgs/b.jpg", root / "imgs/c.jpg"])
    src = CaptionTable(make_caption_table(root, ",", ".csv", [(f"imgs/{n}.jpg", n) for n in "abc"]))
    trainer = Trainer(args=tiny_run_config(tmp_path / "out"), eval_dataset=src)
    with pytest.raises(DataError, match=r"none of the 3 items of CaptionTable could be read .*imgs/a\.jpg") as info:
        trainer.evaluate()
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out" / "eval_metrics.json").exists()


def test_predict_reports_an_unreadable_input_per_item(tmp_path, folder, caplog):
    trainer = Trainer(args=tiny_run_config(tmp_path / "out"), task="zero_shot_image_classification",
                      eval_dataset=ImageFolder(folder))
    good, bad, other = folder / "blue" / "img0.jpg", folder / "green" / "img1.jpg", folder / "red" / "img2.jpg"
    with caplog.at_level(logging.WARNING):
        results = trainer.predict([str(good), str(bad), str(other)], top_k=2)
    assert len(results) == 3 and results[1] is None
    for got, path in ((results[0], good), (results[2], other)):  # not shifted onto another image
        alone = trainer.predict(str(path), top_k=2)[0]
        assert [r["label"] for r in got] == [r["label"] for r in alone]
        assert [r["score"] for r in got] == pytest.approx([r["score"] for r in alone], abs=1e-5)
    assert any("input 1" in r.getMessage() and "img1.jpg" in r.getMessage() for r in caplog.records)
    with pytest.raises(DataError, match="img1.jpg"):
        trainer.predict(str(bad))

"""Embedding export: round trip, resume after an interruption, bad items, faiss == numpy search, the CLI."""
import json

import numpy as np
import pytest
from PIL import Image

import mindram
from mindram.embeddings import RetrievalIndex, load_embeddings, recall_at_k, write_embeddings
from mindram.errors import DataError
from mindram.metrics import retrieval_recall_at_k
from mindram.pipeline import pipeline
from tests.unit.test_clip_model import tiny

TEXTS = ["a dog", "a cat", "two cars", "a tree", "the sea", "a red square", "🐱 猫"]


@pytest.fixture(scope="module")
def model():
    return mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32")))


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(7):
        Image.fromarray((rng.random((30, 20 + 3 * i, 3)) * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    (folder / "p3.png").write_bytes(b"truncated")  # a bad item inside the first shard
    return folder


def paths_of(folder):
    return sorted(folder.glob("p*.png"))


def visible(out):
    return sorted(p.name for p in out.iterdir() if not p.name.startswith("."))


def test_round_trip_and_bad_items(model, image_dir, tmp_path):
    paths = paths_of(image_dir)
    summary = write_embeddings(model, paths, tmp_path / "out", batch_size=2, shard_size=3, progress=False)
    assert summary["num_vectors"] == 6 and summary["num_errors"] == 1 and summary["shards"] == 2  # shard 4 = 2 x 2
    ids, vectors = load_embeddings(tmp_path / "out")
    assert ids == [str(p) for p in paths if p.name != "p3.png"]
    good = [p for p in paths if p.name != "p3.png"]
    np.testing.assert_allclose(vectors, pipeline("feature_extraction", model=model)(good), atol=1e-5)
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert [(e["index"], e["id"]) for e in errors] == [(3, str(paths[3]))] and "DataError" in errors[0]["error"]
    index = [json.loads(line) for line in (tmp_path / "out" / "index.jsonl").read_text().splitlines()]
    assert [r["row"] for r in index] == list(range(6)) and [r["index"] for r in index] == [0, 1, 2, 4, 5, 6]
    assert index[3] == {"id": str(paths[4]), "index": 4, "row": 3, "shard": "shard_00001.npy", "shard_row": 0}


def test_resume_after_interruption(model, image_dir, tmp_path, monkeypatch):
    paths = paths_of(image_dir)
    calls, crashed, original = [], [], model.get_image_features

    def flaky(pixels):
        calls.append(len(pixels))
        if len(calls) == 3 and not crashed:  # once, in the first batch of the 2nd shard
            crashed.append(True)
            raise RuntimeError("simulated crash")
        return original(pixels)
    monkeypatch.setattr(model, "get_image_features", flaky)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_embeddings(model, paths, out, batch_size=2, shard_size=4, progress=False)
    assert visible(out) == ["manifest.json", "shard_00000.json", "shard_00000.npy"]
    assert not list(out.glob(".*"))  # no temporaries left either
    calls.clear()
    summary = write_embeddings(model, paths, out, batch_size=2, shard_size=4, progress=False)
    assert summary["shards_skipped"] == 1 and len(calls) == 2  # shard 0 (2 batches) not recomputed
    ids, vectors = load_embeddings(out)
    write_embeddings(model, paths, tmp_path / "fresh", batch_size=2, shard_size=4, progress=False)
    fresh_ids, fresh = load_embeddings(tmp_path / "fresh")
    assert ids == fresh_ids
    np.testing.assert_allclose(vectors, fresh, atol=1e-6)


@pytest.mark.parametrize("failure", ["raises_mid_write", "writes_a_wrong_array"])
def test_failed_shard_write_leaves_no_temporary_and_no_shard(model, tmp_path, monkeypatch, failure):
    real_save, saves = np.save, []

    def failing_save(file, array, *args, **kwargs):
        saves.append(1)
        if len(saves) < 2:  # shard 0 is written normally
            return real_save(file, array, *args, **kwargs)
        if failure == "raises_mid_write":
            file.write(b"\x93NUMPY half a shard")
            raise OSError(28, "No space left on device")
        return real_save(file, array[:1], *args, **kwargs)  # silently short: caught by the read-back check
    monkeypatch.setattr(np, "save", failing_save)
    out = tmp_path / "out"
    with pytest.raises(OSError if failure == "raises_mid_write" else DataError):
        write_embeddings(model, TEXTS[:4], out, kind="text", batch_size=2, shard_size=2, progress=False)
    assert visible(out) == ["manifest.json", "shard_00000.json", "shard_00000.npy", "shard_00001.json"]
    assert not list(out.glob(".*")), "no temporary is left behind"
    monkeypatch.setattr(np, "save", real_save)
    summary = write_embeddings(model, TEXTS[:4], out, kind="text", batch_size=2, shard_size=2, progress=False)
    assert summary["shards_skipped"] == 1 and summary["num_vectors"] == 4 and summary["num_errors"] == 0
    assert (out / "errors.jsonl").read_bytes() == b""  # an empty file is a valid result here


def test_different_job_is_refused_unless_overwrite(model, image_dir, tmp_path):
    paths = paths_of(image_dir)
    write_embeddings(model, paths[:2], tmp_path / "out", batch_size=2, progress=False)
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="different export"):
        write_embeddings(model, paths[:3], tmp_path / "out", batch_size=2, progress=False)
    write_embeddings(model, paths[:3], tmp_path / "out", batch_size=2, progress=False, overwrite=True)
    assert len(load_embeddings(tmp_path / "out")[0]) == 3
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_text_export(model, tmp_path):
    items = TEXTS[:3] + [None] + TEXTS[3:]
    summary = write_embeddings(model, items, tmp_path / "t", kind="text", batch_size=4, progress=False)
    assert summary["num_vectors"] == len(TEXTS) and summary["num_errors"] == 1
    ids, vectors = load_embeddings(tmp_path / "t")
    assert ids == ["0", "1", "2", "4", "5", "6", "7"]
    np.testing.assert_allclose(vectors, pipeline("feature_extraction", model=model)(texts=TEXTS), atol=1e-5)
    index = [json.loads(line) for line in (tmp_path / "t" / "index.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in index] == TEXTS


def test_faiss_and_numpy_search_agree():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 24)).astype(np.float32)
    queries = rng.standard_normal((17, 24)).astype(np.float32)
    scores, indices = RetrievalIndex(vectors, backend="numpy", chunk_size=5).search(queries, 10)
    brute = queries @ vectors.T
    np.testing.assert_array_equal(indices, np.argsort(-brute, axis=1, kind="stable")[:, :10])
    np.testing.assert_allclose(scores, np.take_along_axis(brute, indices, 1), rtol=1e-6)
    assert RetrievalIndex(vectors[:4], backend="numpy").search(queries, 10)[1].shape == (17, 4)
    pytest.importorskip("faiss")
    index = RetrievalIndex(vectors, backend="auto")
    assert index.backend == "faiss"
    f_scores, f_indices = index.search(queries, 10)
    np.testing.assert_array_equal(f_indices, indices)
    np.testing.assert_allclose(f_scores, scores, atol=1e-5)


def test_recall_from_exports_and_cli(model, image_dir, tmp_path):
    from scripts.export_embeddings import main
    model.save_pretrained(tmp_path / "tiny")
    captions = tmp_path / "captions.txt"
    rows = [("p0.png", "a dog"), ("p0.png", "a dog again"), ("p1.png", "a cat"), ("p3.png", "lost"),
            ("p5.png", "a tree, at night"), ("p6.png", "the sea")]
    captions.write_text("image,caption\n" + "".join(f"{i},{c}\n" for i, c in rows), encoding="utf-8")
    out = tmp_path / "exp"
    metrics = main(["--model", str(tmp_path / "tiny"), "--images", str(image_dir), "--captions", str(captions),
                    "--out", str(out), "--batch_size", "4", "--evaluate", "--ks", "1", "2", "--allow_unpaired"])
    image_ids, images = load_embeddings(out / "images")
    text_ids, texts = load_embeddings(out / "texts")
    assert image_ids == ["p0.png", "p1.png", "p2.png", "p4.png", "p5.png", "p6.png"] and len(text_ids) == 6
    keep = [0, 1, 2, 4, 5]  # "lost" belongs to the unreadable p3.png
    want = retrieval_recall_at_k(images, texts[keep], np.array([0, 0, 1, 4, 5]), ks=(1, 2))
    assert metrics == pytest.approx(want)
    mapping = {str(i): image for i, (image, _) in enumerate(rows)}
    assert recall_at_k(out / "images", out / "texts", mapping, ks=(1, 2), allow_unpaired=True) == pytest.approx(want)
    with pytest.raises(DataError, match=r"1 of 6 captions .* \(first: 3\); 2 of 6 images .*p2.png, p4.png"):
        recall_at_k(out / "images", out / "texts", mapping, ks=(1, 2))  # "lost" has no image, p2, p4 no caption

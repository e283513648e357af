"""The seeds' per-file .npy layout: write/read, the shapes inference tools write, pairing captions by file name,
write_embeddings(layout="npy") with resume, and recall@K on such folders."""
import numpy as np
import pytest

import mindram
from mindram.embeddings import load_embeddings, load_npy_dir, pair_captions_by_name, recall_at_k, \
    write_embeddings, write_npy_dir
from mindram.errors import DataError
from mindram.metrics import retrieval_recall_at_k
from tests.unit.test_clip_model import tiny


def test_round_trip_keeps_folders_and_drops_suffixes(tmp_path):
    vectors = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    write_npy_dir(tmp_path / "v", ["a.jpg", "sub/b.png", "c"], vectors)
    assert sorted(p.relative_to(tmp_path / "v").as_posix() for p in (tmp_path / "v").rglob("*.npy")) == \
        ["a.npy", "c.npy", "sub/b.npy"]
    ids, loaded = load_npy_dir(tmp_path / "v")
    assert ids == ["a", "c", "sub/b"]
    np.testing.assert_array_equal(loaded, vectors[[0, 2, 1]])
    assert load_embeddings(tmp_path / "v")[0] == ids  # the layout is recognised without a manifest
    with pytest.raises(DataError, match="inside the output folder"):
        write_npy_dir(tmp_path / "v", ["../escape"], vectors[:1])
    with pytest.raises(DataError, match="same file"):
        write_npy_dir(tmp_path / "w", ["x.jpg", "x.png"], vectors[:2])


def test_inference_tool_outputs_are_read(tmp_path):
    folder = tmp_path / "om_outputs"
    folder.mkdir()
    np.save(folder / "1007_0.npy", np.ones((1, 4), np.float32))      # (1, D), with the output index _0
    np.save(folder / "1009_0.npy", np.zeros((4,), np.float16))       # (D,) float16
    ids, vectors = load_npy_dir(folder, strip_output_index=True)
    assert ids == ["1007", "1009"] and vectors.dtype == np.float32 and vectors.shape == (2, 4)
    np.save(folder / "bad_0.npy", np.ones((2, 4), np.float32))
    with pytest.raises(DataError, match=r"bad_0.npy: holds an array of shape \(2, 4\)"):
        load_npy_dir(folder)
    np.save(folder / "bad_0.npy", np.ones((5,), np.float32))
    with pytest.raises(DataError, match="width 5"):
        load_npy_dir(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .npy files"):
        load_npy_dir(tmp_path / "empty")

def test_pairing_by_name():
    images = ["1007", "sub/1009", "42_0"]
    texts = ["1007_0", "1007_4", "1009_1", "1009", "77_0", "42_0_0"]
    assert pair_captions_by_name(texts, images) == {"1007_0": "1007", "1007_4": "1007", "1009_1": "sub/1009",
                                                    "42_0_0": "42_0"}


@pytest.mark.slow
def test_write_embeddings_npy_layout_resumes_and_recall_matches(tmp_path):
    model = mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32")))
    texts = ["a dog", "a cat", "two cars", "a tree"]
    ids = ["dog_0", "cat_0", "car_0", "tree_0"]
    summary = write_embeddings(model, texts[:2], tmp_path / "t", kind="text", ids=ids[:2], batch_size=2,
                               layout="npy", progress=False)
    assert summary["num_vectors"] == 2
    summary = write_embeddings(model, texts, tmp_path / "t", kind="text", ids=ids, batch_size=2, layout="npy",
                               progress=False)
    assert summary["skipped_existing"] == 2 and summary["num_vectors"] == 2
    text_ids, text_vectors = load_embeddings(tmp_path / "t")
    expected = mindram.pipeline("feature_extraction", model=model)(texts=texts)
    np.testing.assert_allclose(text_vectors, expected[[2, 1, 0, 3]], atol=1e-5)  # sorted by file name
    images = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    write_npy_dir(tmp_path / "i", ["dog.jpg", "cat.jpg", "car.jpg", "tree.jpg"], images)
    by_name = recall_at_k(tmp_path / "i", tmp_path / "t", ks=(1, 2))
    image_ids, image_vectors = load_embeddings(tmp_path / "i")
    t2i = [image_ids.index(t.rsplit("_", 1)[0]) for t in text_ids]
    assert by_name == retrieval_recall_at_k(image_vectors, text_vectors, np.array(t2i), ks=(1, 2))
    with pytest.raises(ValueError, match="layout"):
        write_embeddings(model, texts, tmp_path / "x", kind="text", layout="parquet")

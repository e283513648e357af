"""The seeds' per-file .npy layout: write/read, the shapes inference tools write, pairing captions by file name,
write_embeddings(layout="npy") with resume, and recall@K on such folders."""
import numpy as np
import pytest

import mindram
from mindram.embeddings import load_embeddings, load_npy_dir, pair_captions_by_name, recall_at_k, \
    strip_output_index, write_embeddings, write_npy_dir
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
    # ais_bench's outputs (<input name>_<output index>): caption 3 of image 42 is 42_3_0, image 42 is 42_0;
    # with the output index removed every caption pairs, not only caption 0
    images, texts = ["42_0", "43_0"], ["42_0_0", "42_3_0", "43_1_0"]
    assert strip_output_index(images) == ["42", "43"] and strip_output_index(texts) == ["42_0", "42_3", "43_1"]
    assert pair_captions_by_name(strip_output_index(texts), strip_output_index(images)) == \
        {"42_0": "42", "42_3": "42", "43_1": "43"}
    with pytest.raises(DataError, match=r"43_1: not an output of ais_bench"):
        strip_output_index(["42_0", "43_1"])


def _ranked_hits(sim, positive, k):
    """Per query row of ``sim``: whether a positive column is among its k best (ties: lower column first)."""
    top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(positive, top, axis=1).any(axis=1)


def brute_force_recall(images, texts, caption_image, ks):
    """Recall@k written out here from the definitions (the code under test is not used): cosine similarity;
    image->text over images with a caption, text->image over captions."""
    images = images / np.linalg.norm(images, axis=1, keepdims=True)
    texts = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    sim = images @ texts.T
    positive = caption_image[None, :] == np.arange(len(images))[:, None]    # (I, T)
    captioned = positive.any(axis=1)
    out = {}
    for k in ks:
        out[f"image_to_text_R@{k}"] = float(_ranked_hits(sim, positive, k)[captioned].mean())
    for k in ks:
        out[f"text_to_image_R@{k}"] = float(_ranked_hits(sim.T, positive.T, k).mean())
    return out


def write_ais_bench_outputs(root, images, texts, captions_per_image):
    """What ais_bench --output om_outputs --output_dirname X --outfmt NPY writes for the guide's inputs
    images/<stem>.npy and texts/<stem>_<k>.npy: one (1, D) file per input, <input name>_0.npy (output 0)."""
    (root / "vision_embed_bs1").mkdir(parents=True)
    (root / "text_embed_bs1").mkdir(parents=True)
    stems = [f"{1007129816 + 7 * i}" for i in range(len(images))]
    for i, stem in enumerate(stems):
        np.save(root / "vision_embed_bs1" / f"{stem}_0.npy", images[i:i + 1])
        for k in range(captions_per_image):
            np.save(root / "text_embed_bs1" / f"{stem}_{k}_0.npy", texts[i * captions_per_image + k][None])
    return stems


def test_recall_of_ais_bench_outputs_pairs_every_caption(tmp_path, monkeypatch):
    from scripts.export_embeddings import main
    rng = np.random.default_rng(7)
    images = rng.standard_normal((12, 8)).astype(np.float32)
    texts = rng.standard_normal((60, 8)).astype(np.float32)
    write_ais_bench_outputs(tmp_path / "om_outputs", images, texts, 5)
    # load_npy_dir sorts by file name: the stems sort as numbers of the same width, captions by k within an image
    want = brute_force_recall(images, texts, np.repeat(np.arange(12), 5), ks=(1, 5, 10))
    assert want["image_to_text_R@10"] != pytest.approx(11 / 12)  # not the figure of caption 0 alone
    got = recall_at_k(tmp_path / "om_outputs" / "vision_embed_bs1", tmp_path / "om_outputs" / "text_embed_bs1")
    assert got == pytest.approx(want, abs=1e-9)
    monkeypatch.chdir(tmp_path)  # the CLI with relative paths
    got = main(["--image_vectors", "om_outputs/vision_embed_bs1", "--text_vectors", "om_outputs/text_embed_bs1"])
    assert got == pytest.approx(want, abs=1e-9)


def test_unpaired_captions_and_images_are_an_error_unless_allowed(tmp_path, monkeypatch, capsys):
    from scripts.export_embeddings import cli
    from mindram.utils.cli import run_cli
    rng = np.random.default_rng(3)
    images = rng.standard_normal((3, 6)).astype(np.float32)
    texts = rng.standard_normal((4, 6)).astype(np.float32)
    write_npy_dir(tmp_path / "i", ["a.jpg", "b.jpg", "c.jpg"], images)
    write_npy_dir(tmp_path / "t", ["a_0", "a_1", "b_0", "zz_0"], texts)   # zz has no image, c no caption
    with pytest.raises(DataError, match=r"1 of 4 captions .* no image .*zz_0.*1 of 3 images .* no caption.*c\b"):
        recall_at_k(tmp_path / "i", tmp_path / "t", ks=(1, 2))
    got = recall_at_k(tmp_path / "i", tmp_path / "t", ks=(1, 2), allow_unpaired=True)
    # zz_0 left out; c stays in the gallery, out of image->text (it has no caption to find)
    assert got == pytest.approx(brute_force_recall(images, texts[:3], np.array([0, 0, 1]), ks=(1, 2)), abs=1e-9)
    monkeypatch.chdir(tmp_path)
    assert run_cli(cli, ["--image_vectors", "i", "--text_vectors", "t"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "zz_0" in err and "--allow_unpaired" in err, err
    assert run_cli(cli, ["--image_vectors", "i", "--text_vectors", "t", "--allow_unpaired", "--ks", "1", "2"]) == 0
    assert "image_to_text_R@1:" in capsys.readouterr().out


def test_symlinks_out_of_the_folder_are_skipped(tmp_path, caplog):
    outside = tmp_path / "outside"
    write_npy_dir(outside, ["x", "deep/y"], np.ones((2, 4), np.float32))
    folder = tmp_path / "vectors"
    write_npy_dir(folder, ["a"], np.zeros((1, 4), np.float32))
    (folder / "b.npy").symlink_to(outside / "x.npy")              # a file link leaving the folder
    (folder / "sub").symlink_to(outside / "deep")                 # a folder link leaving it
    (folder / "same.npy").symlink_to(folder / "a.npy")            # a link that stays inside is read
    with caplog.at_level("WARNING"):
        ids, vectors = load_npy_dir(folder)
    assert ids == ["a", "same"] and vectors.shape == (2, 4)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "b.npy" in warned and "sub" in warned, warned
    ids, _ = load_npy_dir(folder, follow_symlinks=True)
    assert ids == ["a", "b", "same", "sub/y"]
    (outside / "x.npy").unlink()
    (folder / "a.npy").unlink()
    (folder / "same.npy").unlink()
    (folder / "sub").unlink()
    with pytest.raises(DataError, match="no .npy files"):   # only a dangling link left
        load_npy_dir(folder)


def test_temporaries_of_a_killed_writer_are_not_vectors(tmp_path):
    write_npy_dir(tmp_path / "v", ["a"], np.zeros((1, 4), np.float32))
    np.save(tmp_path / "v" / ".a.npy.1f2e3d4c.tmp.npy", np.ones((7,), np.float32))  # atomic_write's temporary
    assert load_npy_dir(tmp_path / "v")[0] == ["a"]


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

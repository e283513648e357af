"""Unit tests of mindram.data: parsers on tiny fixtures, safe pickles, synthetic data, the mindspore pipeline."""
import json
import logging
import pickle

import numpy as np
import pytest
from PIL import Image

from data_fixtures import (cifar_label_names, make_caption_table, make_cifar100, make_flickr8k, make_karpathy,
                           make_malicious_cifar, write_image)
from mindram.data import (DATASETS, CaptionTable, Cifar100, CocoKarpathy, Flickr8k, ImageFolder, RAMTaggingJson,
                          Record, ResumableSampler, SyntheticCaptions, TrainTransform, UnsafePickleError,
                          build_clip_dataset, load_restricted_pickle)
from mindram.data.assembly import plan_pipeline
from mindram.data.transforms import random_resized_crop_params
from mindram.errors import ConfigError, DataError
from mindram.models.clip.image_processing import CLIPImageProcessor
from mindram.models.clip.tokenizer import tokenize

S = 32
L = 16


@pytest.fixture(scope="module")
def proc():
    return CLIPImageProcessor(S)


def batches(dataset, num_epochs=1):
    """All batches of ``num_epochs`` epochs (one iterator), as lists of numpy dicts per epoch."""
    it = dataset.create_dict_iterator(num_epochs=num_epochs, output_numpy=True)
    return [[{k: v.copy() for k, v in b.items()} for b in it] for _ in range(num_epochs)]


# ----------------------------------------------------------------------------------------------- parsers
@pytest.mark.parametrize("nested", [True, False])
def test_flickr8k_train_and_eval(tmp_path, nested):
    caps = make_flickr8k(tmp_path, nested=nested)
    train = Flickr8k(tmp_path, "train")
    assert len(train) == 10 and train.class_names is None and train.max_captions() == 0
    assert [r.caption for r in train][:5] == caps["1000_a.jpg"]  # sorted by #k, quirky '.jpg.1' ignored
    assert all(Image.open(r.image).size == (40, 30) for r in train)
    dev = Flickr8k(tmp_path, "val")  # alias of dev
    assert len(dev) == 1 and dev[0].caption == caps["1002_c.jpg"] and dev[0].label == -1
    assert dev[0].image.endswith("1002_c.jpg") and dev.max_captions() == 5
    test = Flickr8k(tmp_path, "test", per_caption=True)
    assert [r.caption for r in test] == caps["1003_d.jpg"]
    with pytest.raises(ConfigError, match="unknown split"):
        Flickr8k(tmp_path, "validation")


def test_flickr8k_missing_files(tmp_path):
    with pytest.raises(DataError, match="Flickr8k text"):
        Flickr8k(tmp_path / "nowhere")
    make_flickr8k(tmp_path)
    (tmp_path / "Flickr8k_text" / "Flickr8k.devImages.txt").unlink()
    with pytest.raises(DataError, match="devImages"):
        Flickr8k(tmp_path, "dev")


@pytest.mark.parametrize("protocol", ["py2", 2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL])
def test_cifar100(tmp_path, protocol):
    written = make_cifar100(tmp_path, protocol=protocol)
    for split in ("train", "test"):
        src = Cifar100(tmp_path if split == "train" else tmp_path / "cifar-100-python", split)
        data, labels = written[split]
        assert len(src) == len(labels) and src.has_labels
        assert src.class_names[:3] == ["maple tree", "apple", "aquarium fish"] and len(src.class_names) == 100
        rec = src[0]
        assert rec.image.shape == (32, 32, 3) and rec.image.dtype == np.uint8
        # CHW planes -> HWC: pixel (row 1, col 2) of channel c is data[32 * 32 * c + 32 + 2]
        np.testing.assert_array_equal(rec.image[1, 2], data[0, [1024 * c + 34 for c in range(3)]])
        assert rec.label == labels[0] == 0 and rec.caption == "a photo of a maple tree."
        assert [src[i].label for i in range(len(src))] == labels


def test_cifar100_bad_layout(tmp_path):
    make_cifar100(tmp_path)
    d = tmp_path / "cifar-100-python"
    (d / "test").write_bytes(pickle.dumps({"data": np.zeros((2, 100), np.uint8), "fine_labels": [0, 1]}))
    with pytest.raises(DataError, match=r"\(N, 3072\)"):
        Cifar100(tmp_path, "test")
    (d / "test").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="not a readable pickle"):
        Cifar100(tmp_path, "test")
    (d / "meta").unlink()
    with pytest.raises(DataError, match="meta"):
        Cifar100(tmp_path, "train")


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = make_malicious_cifar(tmp_path, marker)
    with pytest.raises(UnsafePickleError) as info:
        Cifar100(tmp_path, "test")
    msg = str(info.value)
    assert str(path) in msg and "system" in msg and "refused" in msg
    assert isinstance(info.value, DataError)
    assert not marker.exists()
    # other ways to obtain a callable are refused as well
    for payload in (b"cbuiltins\neval\n(S'1'\ntR.", b"\x80\x02cnumpy\nload\nq\x00.",
                    b"\x80\x02cnumpy.core.multiarray\nscalar\nq\x00.",
                    b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."):
        bad = tmp_path / "bad.pkl"
        bad.write_bytes(payload)
        with pytest.raises(UnsafePickleError, match="refused"):
            load_restricted_pickle(bad)
    assert not marker.exists()


class _ObjectArray:
    def __reduce__(self):
        return np.core.numeric._frombuffer, (b"", np.dtype(object), (0,), "C")


def test_restricted_pickle_numpy_rules(tmp_path):
    path = tmp_path / "a.pkl"
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    for protocol in (2, 4, 5):
        path.write_bytes(pickle.dumps({"a": arr, b"b": [1, 2.5, "x", b"y", None, (True,)]}, protocol=protocol))
        out = load_restricted_pickle(path)
        np.testing.assert_array_equal(out["a"], arr)
        assert out[b"b"] == [1, 2.5, "x", b"y", None, (True,)]
    path.write_bytes(pickle.dumps(_ObjectArray(), protocol=5))
    with pytest.raises(UnsafePickleError, match="_frombuffer"):
        load_restricted_pickle(path)


def test_karpathy(tmp_path):
    paths = make_karpathy(tmp_path)
    train = CocoKarpathy(tmp_path, paths["train"], "train")
    assert len(train) == 6 and train[1] == Record(str(tmp_path / "val2014" / "img0.jpg"), "train caption 0.1", -1)
    test = CocoKarpathy(tmp_path, "coco_karpathy_test.json", "test")  # relative to root
    assert len(test) == 3 and test[2].caption == [f"test caption 2.{k}" for k in range(6)]
    assert test.max_captions() == 6
    assert len(CocoKarpathy(tmp_path, paths["test"], "test", per_caption=True)) == 16
    with pytest.raises(DataError, match="not found"):
        CocoKarpathy(tmp_path, "missing.json", "test")


@pytest.mark.parametrize("sep,suffix", [(",", ".csv"), ("\t", ".tsv")])
def test_caption_table(tmp_path, sep, suffix):
    write_image(tmp_path / "imgs" / "x.png", fmt="PNG")
    table = make_caption_table(tmp_path, sep, suffix, [("imgs/x.png", "a red thing"), ("imgs/y.png", "blue")])
    src = CaptionTable(table)
    assert src.sep == sep and len(src) == 2
    assert src[0] == Record(str(tmp_path / "imgs" / "x.png"), "a red thing", -1)
    write_image(tmp_path / "elsewhere" / "imgs" / "y.png", fmt="PNG")
    assert CaptionTable(table, root=tmp_path / "elsewhere")[1].image == str(tmp_path / "elsewhere/imgs/y.png")
    with pytest.raises(DataError, match="not in the header"):
        CaptionTable(table, caption_key="caption")
    with pytest.raises(DataError, match="not in the header"):  # wrong separator
        CaptionTable(table, sep=";")


def test_image_folder(tmp_path):
    for i, name in enumerate(["golden_retriever/a.jpg", "cat/b.png", "cat/sub/c.JPG", "cat/notes.txt"]):
        path = tmp_path / name
        if name.endswith(".txt"):
            path.write_text("not an image")
        else:
            write_image(path, seed=i, fmt="PNG" if name.endswith(".png") else "JPEG")
    src = ImageFolder(tmp_path)
    assert src.class_names == ["cat", "golden retriever"]
    assert [(r.image.split("/")[-1], r.label) for r in src] == [("b.png", 0), ("c.JPG", 0), ("a.jpg", 1)]
    assert src[2].caption == "a photo of a golden retriever."
    assert ImageFolder(tmp_path, class_names=["kitty", "dog"])[2].caption == "a photo of a dog."
    with pytest.raises(ConfigError, match="class_names"):
        ImageFolder(tmp_path, class_names=["one"])


def test_datasets_dict():
    assert set(DATASETS) == {"flickr8k", "cifar100", "coco_karpathy", "caption_table", "image_folder",
                             "synthetic_captions", "ram_tagging_json", "tagging_annotations", "synthetic_tags"}


# --------------------------------------------------------------------------------------------- synthetic
def test_synthetic_deterministic_and_split_disjoint():
    a, b = SyntheticCaptions(20, image_size=S, seed=3), SyntheticCaptions(20, image_size=S, seed=3)
    for i in range(20):
        ra, rb = a[i], b[i]
        np.testing.assert_array_equal(ra.image, rb.image)
        assert (ra.caption, ra.label) == (rb.caption, rb.label)
        assert ra.image.shape == (S, S, 3) and ra.image.dtype == np.uint8
    test = SyntheticCaptions(20, image_size=S, seed=3, split="test")
    other = SyntheticCaptions(20, image_size=S, seed=4)
    assert all(not np.array_equal(a[i].image, test[i].image) for i in range(20))
    assert all(not np.array_equal(a[i].image, other[i].image) for i in range(20))


def test_synthetic_captions_and_classes():
    src = SyntheticCaptions(200, image_size=48)
    assert len(src.class_names) == 32 and src.class_names[0] == "red circle" and src.has_labels
    labels = set()
    for rec in src:
        colour, shape = src.class_names[rec.label].split()
        assert colour in rec.caption and shape in rec.caption
        labels.add(rec.label)
    assert len(labels) > 25  # all classes are drawn
    small = SyntheticCaptions(10, colours=["red", "blue"], shapes=["circle", "square"])
    assert small.class_names == ["red circle", "red square", "blue circle", "blue square"]
    with pytest.raises(ConfigError):
        SyntheticCaptions(10, colours=["magenta"])


def test_synthetic_colour_is_visible():
    """The shape's colour dominates the pixels that differ most from the background."""
    src = SyntheticCaptions(40, image_size=64, colours=["red", "blue"], shapes=["square"])
    for rec in src:
        img = rec.image.astype(np.float32)
        r_minus_b = img[..., 0] - img[..., 2]
        extreme = r_minus_b.flat[np.argmax(np.abs(r_minus_b))]
        assert (extreme > 0) == (rec.label == 0), rec.caption


# ---------------------------------------------------------------------------------------------- pipeline
def test_pipeline_shapes_and_dtypes(proc):
    src = SyntheticCaptions(20, image_size=48)
    ds = build_clip_dataset(src, proc, batch_size=8, num_workers=2, context_length=L)
    assert ds.get_dataset_size() == 2
    (epoch,) = batches(ds)
    assert len(epoch) == 2
    for b in epoch:
        assert list(b) == ["pixel_values", "input_ids", "label"]
        assert b["pixel_values"].shape == (8, 3, S, S) and b["pixel_values"].dtype == np.float32
        assert b["input_ids"].shape == (8, L) and b["input_ids"].dtype == np.int32
        assert b["label"].shape == (8,) and b["label"].dtype == np.int32
    # rows match the records they come from (eval transform + tokenizer)
    ds = build_clip_dataset(src, proc, batch_size=4, shuffle=False, context_length=L, return_index=True)
    b = batches(ds)[0][1]
    np.testing.assert_array_equal(b["index"], [4, 5, 6, 7])
    np.testing.assert_allclose(b["pixel_values"][0], proc.preprocess(src[4].image), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(b["input_ids"][1], tokenize([src[5].caption], context_length=L)[0])
    assert b["label"][2] == src[6].label


def test_pipeline_multi_caption(tmp_path, proc):
    paths = make_karpathy(tmp_path)
    src = CocoKarpathy(tmp_path, paths["test"], "test")
    (epoch,) = batches(build_clip_dataset(src, proc, batch_size=3, shuffle=False, context_length=L))
    (b,) = epoch
    assert list(b) == ["pixel_values", "input_ids", "num_captions"]
    assert b["input_ids"].shape == (3, 6, L) and b["num_captions"].tolist() == [5, 5, 6]
    assert not b["input_ids"][0, 5].any() and b["input_ids"][2, 5].any()  # zero padding row
    np.testing.assert_array_equal(b["input_ids"][1], np.concatenate(
        [tokenize(src[1].caption, context_length=L), np.zeros((1, L), np.int32)]))
    b = batches(build_clip_dataset(src, proc, batch_size=3, shuffle=False, context_length=L, num_captions=2))[0][0]
    assert b["input_ids"].shape == (3, 2, L) and b["num_captions"].tolist() == [2, 2, 2]


def test_bad_images_are_substituted_and_counted(tmp_path, proc, caplog):
    rows = []
    for i in range(6):
        rows.append((f"img{i}.jpg", f"photo {i}"))
        if i not in (1, 4):
            write_image(tmp_path / f"img{i}.jpg", seed=i)
    (tmp_path / "img1.jpg").write_bytes(b"\xff\xd8\xff garbage, not a jpeg")  # corrupt; img4 is missing
    src = CaptionTable(make_caption_table(tmp_path, ",", ".csv", rows))
    with caplog.at_level(logging.WARNING, logger="mindram.data"):
        ds = build_clip_dataset(src, proc, batch_size=3, shuffle=False, num_workers=2, context_length=L,
                                return_index=True)
        first, second = batches(ds, num_epochs=2)
    for epoch in (first, second):
        assert [b["pixel_values"].shape[0] for b in epoch] == [3, 3]  # full batches
        assert np.concatenate([b["index"] for b in epoch]).tolist() == [0, 2, 2, 3, 5, 5]
    assert sorted(src.bad_items) == [1, 4] and src.stats.num_bad == 2
    assert "img1.jpg" in src.bad_items[1] and "img4.jpg" in src.bad_items[4]
    assert src.stats.num_substituted == 4
    per_file = [r for r in caplog.records if "skipping unreadable item" in r.getMessage()]
    assert len(per_file) == 2  # one warning per bad file, not per epoch
    summaries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(summaries) == 2 and all("2 sample(s) replaced" in m for m in summaries)


def test_all_images_bad_is_an_error(tmp_path, proc):
    for name in ("nope.jpg", "nada.jpg"):
        (tmp_path / name).write_bytes(b"\xff\xd8\xff not a jpeg")
    src = CaptionTable(make_caption_table(tmp_path, ",", ".csv", [("nope.jpg", "x"), ("nada.jpg", "y")]))
    with pytest.raises(RuntimeError, match="no readable item"):
        batches(build_clip_dataset(src, proc, batch_size=2, context_length=L))


def test_eval_pipeline_flags_unreadable_items_in_place(tmp_path, proc, caplog):
    """substitute_unreadable=False: every item keeps its slot; a bad one is a placeholder with readable=False."""
    rows = [(f"img{i}.jpg", [f"photo {i}", f"picture {i}"]) for i in range(5)]
    for i in (0, 2, 4):
        write_image(tmp_path / f"img{i}.jpg", seed=i)
    (tmp_path / "img1.jpg").write_bytes(b"\xff\xd8\xff garbage, not a jpeg")  # img3 is missing
    src = CaptionTable(make_caption_table(tmp_path, ",", ".csv", [(p, c[0]) for p, c in rows]))
    src._items = [(str(tmp_path / p), list(c), i) for i, (p, c) in enumerate(rows)]  # labelled, 2 captions each
    src.class_names = [f"class {i}" for i in range(5)]
    with caplog.at_level(logging.WARNING, logger="mindram.data"):
        ds = build_clip_dataset(src, proc, batch_size=2, shuffle=False, drop_remainder=False, num_workers=2,
                                context_length=L, return_index=True, substitute_unreadable=False)
        (epoch,) = batches(ds)
    assert list(epoch[0]) == ["pixel_values", "input_ids", "label", "num_captions", "index", "readable"]
    col = {k: np.concatenate([b[k] for b in epoch]) for k in epoch[0]}
    assert col["index"].tolist() == [0, 1, 2, 3, 4] and col["readable"].tolist() == [True, False, True, False, True]
    assert col["label"].tolist() == [0, -1, 2, -1, 4] and col["num_captions"].tolist() == [2, 0, 2, 0, 2]
    assert not col["pixel_values"][[1, 3]].any() and not col["input_ids"][[1, 3]].any()
    np.testing.assert_array_equal(col["pixel_values"][2], proc.preprocess(str(tmp_path / "img2.jpg")))
    assert sorted(src.bad_items) == [1, 3] and src.stats.num_substituted == 0
    assert all("left out of the evaluation" in r.getMessage() for r in caplog.records
               if "skipping unreadable item" in r.getMessage())
    # the default (training) pipeline has no readable column
    assert "readable" not in build_clip_dataset(src, proc, batch_size=2, context_length=L).get_col_names()


def one_line_data_error(make, *where):
    """``make()`` raises a one-line DataError naming every string of ``where``."""
    with pytest.raises(DataError) as info:
        make()
    message = str(info.value)
    assert "\n" not in message and all(str(w) in message for w in where), message
    return message


def test_empty_dataset_dirs_raise_data_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "<class>" in one_line_data_error(lambda: ImageFolder(empty), empty)
    one_line_data_error(lambda: Flickr8k(empty, "test"), empty / "Flickr8k_Dataset")
    one_line_data_error(lambda: Cifar100(empty, "test"), empty / "test")
    one_line_data_error(lambda: CaptionTable(empty), empty, "directory")
    one_line_data_error(lambda: CocoKarpathy(empty, split="test"), empty, "coco_karpathy_test.json")
    one_line_data_error(lambda: RAMTaggingJson(empty), empty, "*_ram.json")
    one_line_data_error(lambda: CocoKarpathy(empty / "missing", split="test"), empty / "missing")
    (empty / "cat").mkdir()
    (empty / "cat" / "notes.txt").write_text("not an image")
    one_line_data_error(lambda: ImageFolder(empty), empty, "['cat']")


def test_sources_whose_images_all_do_not_exist_raise(tmp_path):
    table = make_caption_table(tmp_path, ",", ".csv", [("imgs/a.jpg", "x"), ("imgs/b.jpg", "y")])
    one_line_data_error(lambda: CaptionTable(table), "none of the 2 image files exists", tmp_path / "imgs/a.jpg")
    write_image(tmp_path / "imgs" / "b.jpg")
    assert len(CaptionTable(table)) == 2  # one readable image is enough; the missing one is skipped later
    paths = make_karpathy(tmp_path / "coco")
    one_line_data_error(lambda: CocoKarpathy(tmp_path / "elsewhere", paths["test"], "test"),
                        "none of the 3 image files", tmp_path / "elsewhere")
    make_flickr8k(tmp_path / "flickr")
    for image in (tmp_path / "flickr").rglob("*.jpg"):
        image.unlink()
    one_line_data_error(lambda: Flickr8k(tmp_path / "flickr", "dev"), "none of the 1 image files")


def test_annotation_files_are_found_in_the_root(tmp_path):
    make_karpathy(tmp_path)
    assert len(CocoKarpathy(tmp_path, split="test")) == 3  # default coco_karpathy_test.json
    one_line_data_error(lambda: CocoKarpathy(tmp_path, "nope.json", "test"), "nope.json", tmp_path / "nope.json")
    (tmp_path / "x_ram.json").write_text(json.dumps([{"image_path": "val2014/img0.jpg", "union_label_id": [1]}]))
    assert RAMTaggingJson(tmp_path, num_tags=3)[0].image == str(tmp_path / "val2014/img0.jpg")
    assert len(RAMTaggingJson(tmp_path, "x_ram.json", num_tags=3)) == 1  # relative to root


def test_cifar100_empty_split(tmp_path):
    make_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "test").write_bytes(
        pickle.dumps({"data": np.zeros((0, 3072), np.uint8), "fine_labels": []}))
    one_line_data_error(lambda: Cifar100(tmp_path, "test"), tmp_path / "cifar-100-python" / "test", "0 rows")


def test_shuffle_is_seeded(proc):
    src = SyntheticCaptions(24, image_size=S)

    def order(seed, epochs=2, workers=1):
        ds = build_clip_dataset(src, proc, batch_size=4, seed=seed, num_workers=workers, context_length=L,
                                return_index=True)
        return [np.concatenate([b["index"] for b in ep]).tolist() for ep in batches(ds, epochs)]

    a = order(0)
    assert a == order(0, workers=2)
    assert sorted(a[0]) == list(range(24)) and a[0] != list(range(24))
    assert a[0] != a[1]  # a new permutation every epoch
    assert order(1) != a


@pytest.mark.parametrize("train_transform", [False, True])
def test_resume_mid_epoch_is_exact(proc, train_transform):
    src = SyntheticCaptions(22, image_size=40)  # 5 steps/epoch of 4, 2 samples dropped per epoch
    kw = dict(batch_size=4, seed=7, num_workers=2, context_length=L, return_index=True,
              train_transform=train_transform)
    full = [b for ep in batches(build_clip_dataset(src, proc, **kw), num_epochs=3) for b in ep]
    assert len(full) == 15
    for start_epoch, start_step in ((0, 3), (1, 1), (0, 7)):  # (0, 7): a global step, folded into epoch 1
        resumed = batches(build_clip_dataset(src, proc, start_epoch=start_epoch, start_step=start_step, **kw),
                          num_epochs=2)
        g = start_epoch * 5 + start_step
        assert [len(ep) for ep in resumed] == [5 - g % 5, 5]
        flat = [b for ep in resumed for b in ep]
        for got, want in zip(flat, full[g:]):
            for key in want:
                np.testing.assert_array_equal(got[key], want[key])


def test_resume_does_not_load_skipped_samples(proc):
    calls = []

    class Counting(SyntheticCaptions):
        def __getitem__(self, index):
            calls.append(index)
            return super().__getitem__(index)

    src = Counting(16, image_size=S)
    batches(build_clip_dataset(src, proc, batch_size=4, start_step=3, context_length=L))
    assert len(calls) == 4


def test_train_transform(proc):
    rng = np.random.default_rng(0)
    for _ in range(50):
        top, left, h, w = random_resized_crop_params(50, 40, (0.9, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= top <= 40 - h and 0 <= left <= 50 - w and 0.89 * 2000 <= h * w <= 2000 * 1.01
    image = SyntheticCaptions(1, image_size=48)[0].image
    tf = TrainTransform(proc)
    out = tf(image, np.random.default_rng(1))
    assert out.shape == (3, S, S) and out.dtype == np.float32
    np.testing.assert_array_equal(out, tf(image, np.random.default_rng(1)))
    assert not np.array_equal(out, tf(image, np.random.default_rng(2)))
    # epochs see different crops of the same image
    src = SyntheticCaptions(4, image_size=48)
    ds = build_clip_dataset(src, proc, batch_size=4, shuffle=False, train_transform=True, context_length=L)
    e0, e1 = batches(ds, num_epochs=2)
    assert not np.array_equal(e0[0]["pixel_values"], e1[0]["pixel_values"])
    with pytest.raises(ConfigError):
        TrainTransform(proc, scale=(0.5, 1.5))


def test_sampler_and_builder_validation(proc):
    s = ResumableSampler(10, 4, seed=1)
    assert len(s) == 8 and list(s) != list(s)  # next iteration = next epoch
    s.set_epoch(0)
    codes = list(s)
    assert [s.decode(c) for c in codes] == [(0, int(i)) for i in s.order(0)]
    src = SyntheticCaptions(3, image_size=S)
    with pytest.raises(DataError, match="fewer than batch_size"):
        build_clip_dataset(src, proc, batch_size=4)
    with pytest.raises(ConfigError, match="batch_size"):
        build_clip_dataset(src, proc, batch_size=0)
    (epoch,) = batches(build_clip_dataset(src, proc, batch_size=2, drop_remainder=False, context_length=L))
    assert [b["label"].shape[0] for b in epoch] == [2, 1]


def test_plan_pipeline_folds_the_resume_point_and_checks_arguments():
    plan = plan_pipeline(range(10), batch_size=4, shuffle=True, num_workers=1, drop_remainder=True, seed=3,
                         start_epoch=1, start_step=5)  # 2 steps per epoch: step 5 of epoch 1 is step 1 of epoch 3
    assert (plan.start_epoch, plan.start_step, plan.steps_per_epoch, plan.first_epoch_items) == (3, 1, 2, 4)
    assert plan.sampler.epoch == 3 and "10 records, 2 steps/epoch of 4" in plan.describe()
    with pytest.raises(ConfigError, match="seed: expected an int >= 0"):
        plan_pipeline(range(10), 4, True, 1, True, seed=-1)
    with pytest.raises(DataError, match="no records"):
        plan_pipeline([], 4, True, 1, True, seed=0)


def test_one_tag_list_reader(tmp_path):
    from mindram.metrics import read_taglist
    from mindram.models.ram import tags
    from mindram.utils.tag_lists import read_tag_list
    assert tags.read_tag_list is read_tag_list
    path = tmp_path / "tags.txt"
    path.write_text("cat\n\ndog \n", encoding="utf-8")
    assert read_tag_list(path) == ["cat", "", "dog "]  # the reference's read().splitlines(): nothing stripped
    assert read_taglist(path) == read_tag_list(path, skip_blank=True) == ["cat", "dog "]
    with pytest.raises(FileNotFoundError, match="tag list not found"):
        read_tag_list(tmp_path / "nope.txt")


def test_flickr8k_pipeline(tmp_path, proc):
    make_flickr8k(tmp_path)
    ds = build_clip_dataset(Flickr8k(tmp_path, "train"), proc, batch_size=4, context_length=L)
    (epoch,) = batches(ds)
    assert len(epoch) == 2 and set(epoch[0]) == {"pixel_values", "input_ids"}
    ds = build_clip_dataset(Flickr8k(tmp_path, "test"), proc, batch_size=1, context_length=L)
    assert batches(ds)[0][0]["input_ids"].shape == (1, 5, L)


def test_cifar_pipeline(tmp_path, proc):
    make_cifar100(tmp_path)
    src = Cifar100(tmp_path, "test")
    (epoch,) = batches(build_clip_dataset(src, proc, batch_size=2, shuffle=False, context_length=L))
    assert [b["label"].tolist() for b in epoch] == [[src[0].label, src[1].label], [src[2].label, src[3].label]]
    assert cifar_label_names()[0] == "maple_tree"

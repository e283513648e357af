"""Hostile vector stores and exports: every read of a write_embeddings export checks ids against rows, the dtype,
the shape and the manifest against the shards (a mismatch is a one-line DataError naming the file; resume
computes a failing shard again), export.json keeps its graphs inside their directory and its preprocessing sane,
and seeded fuzz runs of a few hundred mutations of both give only typed errors or correct results."""
import hashlib
import json
import re
import time
import tracemalloc

import numpy as np
import pytest

from mindram.embeddings import RetrievalIndex, load_embeddings, write_embeddings
from mindram.errors import ConfigError, DataError
from mindram.export.manifest import read_manifest
from mindram.models.clip.image_processing import CLIPImageProcessor

ITEMS, SHARD, WIDTH = 40, 8, 4
MiB = 1024 * 1024


def vector(i):
    return np.array([i, 1.0, -i, 0.5], np.float32)


def write_store(out, items=ITEMS, shard_size=SHARD, bad=(3,), kind="image"):
    """An export in write_embeddings' layout, written here by hand: item ``i`` has vector(i), items in ``bad``
    were skipped as unreadable."""
    out.mkdir(parents=True, exist_ok=True)
    num_shards = -(-items // shard_size)
    manifest = {"format": "mindram-embeddings/1", "kind": kind, "num_items": items, "shard_size": shard_size,
                "num_shards": num_shards, "normalize": False, "items_sha256": "0" * 64, "model": None}
    (out / "manifest.json").write_text(json.dumps(manifest))
    for k in range(num_shards):
        start, stop = k * shard_size, min(items, (k + 1) * shard_size)
        rows = [i for i in range(start, stop) if i not in bad]
        meta = {"start": start, "stop": stop, "indices": rows, "ids": [f"item{i}" for i in rows],
                "errors": [{"id": f"item{i}", "index": i, "error": "OSError: bad"} for i in range(start, stop)
                           if i in bad], "shard": k}
        if kind == "text":
            meta["texts"] = [f"text {i}" for i in rows]
        (out / f"shard_{k:05d}.json").write_text(json.dumps(meta))
        np.save(out / f"shard_{k:05d}.npy", np.stack([vector(i) for i in rows]) if rows else
                np.zeros((0, 0), np.float32))
    return out


def expected(items=ITEMS, bad=(3,)):
    good = [i for i in range(items) if i not in bad]
    return [f"item{i}" for i in good], np.stack([vector(i) for i in good])


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_store_round_trip(tmp_path):
    ids, vectors = load_embeddings(write_store(tmp_path / "s"))
    want_ids, want = expected()
    assert ids == want_ids
    np.testing.assert_array_equal(vectors, want)


def write_npy_header(path, shape):
    """An .npy file whose header claims ``shape`` (float32) but which holds one row of data."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.write(np.ones(4, np.float32).tobytes())


STORE_DEFECTS = {
    "one_row_more": (lambda d: np.save(d / "shard_00001.npy", np.stack([vector(i) for i in range(8, 17)])),
                     "shard_00001.npy: an array of shape (9, 4), expected (8, D)"),
    "one_row_less": (lambda d: np.save(d / "shard_00001.npy", np.stack([vector(i) for i in range(8, 15)])),
                     "shard_00001.npy: an array of shape (7, 4), expected (8, D)"),
    "int32_rows": (lambda d: np.save(d / "shard_00002.npy", np.ones((8, 4), np.int32)),
                   "shard_00002.npy: vectors of dtype int32, expected floating point"),
    "one_dimensional": (lambda d: np.save(d / "shard_00002.npy", np.ones(8, np.float32)),
                        "shard_00002.npy: an array of shape (8,)"),
    "other_width": (lambda d: np.save(d / "shard_00002.npy", np.ones((8, 5), np.float32)),
                    "shard_00002.npy: vectors of width 5, the shards before hold width 4"),
    "num_shards_1": (lambda d: edit_json(d / "manifest.json", lambda m: m.update(num_shards=1)),
                     "manifest.json: key 'num_shards' is 1, expected 5"),
    "num_shards_-1": (lambda d: edit_json(d / "manifest.json", lambda m: m.update(num_shards=-1)),
                      "manifest.json: key 'num_shards' is -1, expected 5"),
    "manifest_shrunk": (lambda d: edit_json(d / "manifest.json", lambda m: m.update(num_items=8, num_shards=1)),
                        "num_shards is 1 but the folder also holds ['shard_00001.json'"),
    "manifest_not_json": (lambda d: (d / "manifest.json").write_text("{format"), "manifest.json: not a readable JSON"),
    "manifest_a_list": (lambda d: (d / "manifest.json").write_text("[1, 2]"), "manifest.json: a JSON list"),
    "manifest_no_kind": (lambda d: edit_json(d / "manifest.json", lambda m: m.pop("kind")),
                         "manifest.json: key 'kind' is None"),
    "manifest_items_str": (lambda d: edit_json(d / "manifest.json", lambda m: m.update(num_items="40")),
                           "manifest.json: key 'num_items' is '40'"),
    "meta_ids_not_list": (lambda d: edit_json(d / "shard_00000.json", lambda m: m.update(ids=7)),
                          "shard_00000.json: key 'ids' is 7"),
    "meta_index_outside": (lambda d: edit_json(d / "shard_00000.json", lambda m: m["indices"].__setitem__(0, 99)),
                           "shard_00000.json: key 'indices'"),
    "meta_lost_an_error": (lambda d: edit_json(d / "shard_00000.json", lambda m: m.update(errors=[])),
                           "shard_00000.json: key 'errors' is [], expected 1 error records"),
    "meta_other_shard": (lambda d: edit_json(d / "shard_00001.json", lambda m: m.update(start=0)),
                         "shard_00001.json: key 'start' is 0, expected 8"),
    "npy_garbage": (lambda d: (d / "shard_00001.npy").write_bytes(b"\x93NUMPY garbage"),
                    "shard_00001.npy: not a readable .npy array"),
    "npy_pickled": (lambda d: np.save(d / "shard_00001.npy", np.array([{"a": 1}] * 8, object), allow_pickle=True),
                    "shard_00001.npy: not a readable .npy array"),
    "npy_shape_over_file": (lambda d: write_npy_header(d / "shard_00001.npy", (8 * 10 ** 9, 4)),
                            "shard_00001.npy: not a readable .npy array"),
}


@pytest.mark.parametrize("defect", sorted(STORE_DEFECTS))
def test_a_store_that_does_not_add_up_is_a_one_line_data_error(tmp_path, defect):
    out = write_store(tmp_path / "s")
    damage, message = STORE_DEFECTS[defect]
    damage(out)
    with pytest.raises(DataError, match=re.escape(message)) as raised:
        load_embeddings(out)
    assert "\n" not in str(raised.value)
    with pytest.raises(DataError):
        RetrievalIndex.from_dir(out)


class TextEncoder:
    """A stand-in CLIP for texts: the vector of a text is its first 4 token ids (counted calls)."""

    context_length = 8

    def __init__(self):
        self.calls = 0

    def get_text_features(self, ids):
        self.calls += 1
        return np.asarray(ids, np.float32)[:, :WIDTH]

    def get_image_features(self, pixels):
        raise AssertionError("texts only")


@pytest.mark.parametrize("damage", ["extra_row", "int32", "truncated"])
def test_resume_computes_a_shard_that_fails_the_checks_again(tmp_path, damage, caplog):
    texts = [f"text number {i}" for i in range(10)]
    out = tmp_path / "t"
    model = TextEncoder()
    write_embeddings(model, texts, out, kind="text", batch_size=2, shard_size=4, normalize=False, progress=False)
    fresh_ids, fresh = load_embeddings(out)
    npy = out / "shard_00001.npy"
    rows = np.load(npy)
    if damage == "extra_row":
        np.save(npy, np.concatenate([rows, rows[:1]]))
    elif damage == "int32":
        np.save(npy, rows.astype(np.int32))
    else:
        npy.write_bytes(npy.read_bytes()[:-8])
    model.calls = 0
    summary = write_embeddings(model, texts, out, kind="text", batch_size=2, shard_size=4, normalize=False,
                               progress=False)
    assert summary["shards_skipped"] == 2 and model.calls == 2          # shard 1 (2 batches) computed again
    assert "shard_00001.npy" in caplog.text and "computing shard 1 again" in caplog.text
    ids, vectors = load_embeddings(out)
    assert ids == fresh_ids
    np.testing.assert_array_equal(vectors, fresh)


def test_resume_refuses_a_corrupt_manifest_in_one_line(tmp_path):
    out = tmp_path / "t"
    write_embeddings(TextEncoder(), ["a", "b"], out, kind="text", batch_size=2, progress=False)
    (out / "manifest.json").write_text('{"format": "mindram-embeddings/1", "kind": ')
    with pytest.raises(DataError, match="manifest.json: not a readable JSON file.*overwrite=True") as raised:
        write_embeddings(TextEncoder(), ["a", "b"], out, kind="text", batch_size=2, progress=False)
    assert "\n" not in str(raised.value)


# --- export.json --------------------------------------------------------------------------------------------

def write_export(out, graph_bytes=b"an onnx graph"):
    """A CLIP export directory as python -m mindram.export writes it (one image graph), by hand."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "image_encoder.onnx").write_bytes(graph_bytes)
    manifest = {"format": "mindram-export/1", "family": "clip", "model": "tiny",
                "preprocessing": CLIPImageProcessor(image_size=32).to_dict(),
                "graphs": {"image_encoder": {
                    "tower": "image",
                    "files": {"onnx": {"path": "image_encoder.onnx", "bytes": len(graph_bytes),
                                       "sha256": hashlib.sha256(graph_bytes).hexdigest()}},
                    "inputs": [{"name": "image", "shape": ["batch", 3, 32, 32], "dtype": "float32"}],
                    "outputs": [{"name": "embeds", "shape": ["batch", 16], "dtype": "float32"}],
                    "normalized": False}}}
    (out / "export.json").write_text(json.dumps(manifest))
    return out


def set_path(value):
    return lambda m: m["graphs"]["image_encoder"]["files"]["onnx"].update(path=value)


def set_pre(key, value):
    return lambda m: m["preprocessing"].update({key: value})


EXPORT_DEFECTS = {
    "parent_path": (set_path("../secret.onnx"), "'../secret.onnx', not a relative path inside"),
    "absolute_path": (set_path("/etc/passwd"), "'/etc/passwd', not a relative path inside"),
    "backslash_path": (set_path("..\\secret.onnx"), "not a relative path inside"),
    "std_zero": (set_pre("std", [0.2, 0.0, 0.2]), "preprocessing.std is [0.2, 0.0, 0.2], expected 3 numbers > 0"),
    "std_negative": (set_pre("std", [-0.2, 0.2, 0.2]), "preprocessing.std"),
    "mean_two": (set_pre("mean", [0.5, 0.5]), "preprocessing.mean is"),
    "fill_color_text": (set_pre("fill_color", "white"), "preprocessing.fill_color is 'white'"),
    "interpolation_list": (set_pre("interpolation", ["bicubic"]), "preprocessing.interpolation is"),
    "mean_text": (set_pre("mean", ["a", "b", "c"]), "preprocessing.mean is"),
    "std_bool": (set_pre("std", True), "preprocessing.std is True"),
    "size_zero": (set_pre("image_size", 0), "preprocessing.image_size is 0"),
    "size_other": (set_pre("image_size", 64), "takes [3, 32, 32] images, preprocessing.image_size is 64"),
    "preprocessing_list": (lambda m: m.update(preprocessing=[1]), "preprocessing is [1], expected an object"),
    "preprocessing_gone": (lambda m: m.pop("preprocessing"), "preprocessing is None, expected an object"),
    "size_gone": (lambda m: m["preprocessing"].pop("image_size"), "with the image_size of the graphs' image"),
    "files_list": (lambda m: m["graphs"]["image_encoder"].update(files=[1]), "graphs.image_encoder.files is"),
    "record_no_bytes": (lambda m: m["graphs"]["image_encoder"]["files"]["onnx"].pop("bytes"),
                        "graphs.image_encoder.files.onnx is"),
    "inputs_bad_shape": (lambda m: m["graphs"]["image_encoder"]["inputs"][0].update(shape=[-1, 3]),
                         "graphs.image_encoder.inputs is"),
    "graph_a_string": (lambda m: m["graphs"].update(image_encoder="x"), "'graphs' must map graph names to objects"),
}


@pytest.mark.parametrize("defect", sorted(EXPORT_DEFECTS))
def test_export_json_defects_are_one_line_config_errors(tmp_path, defect):
    out = write_export(tmp_path / "e")
    (tmp_path / "secret.onnx").write_bytes(b"an onnx graph")   # what an escaping path would read
    change, message = EXPORT_DEFECTS[defect]
    manifest = json.loads((out / "export.json").read_text())
    change(manifest)
    (out / "export.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        read_manifest(out, fmt="onnx")
    assert "\n" not in str(raised.value)


def test_a_symlinked_graph_leading_out_is_refused_and_sha256_still_checked(tmp_path):
    out = write_export(tmp_path / "e")
    assert read_manifest(out, fmt="onnx")["graphs"]["image_encoder"]["tower"] == "image"
    (tmp_path / "elsewhere.onnx").write_bytes(b"an onnx graph")
    (out / "image_encoder.onnx").unlink()
    (out / "image_encoder.onnx").symlink_to(tmp_path / "elsewhere.onnx")
    with pytest.raises(ConfigError, match="leads outside the export directory"):
        read_manifest(out, fmt="onnx")
    (out / "image_encoder.onnx").unlink()
    (out / "image_encoder.onnx").write_bytes(b"an onnx graph!"[:13].replace(b"a", b"A", 1))  # same size, changed
    with pytest.raises(ConfigError, match="sha256 differs"):
        read_manifest(out, fmt="onnx")


@pytest.mark.parametrize("defect", ["no_tower", "tower_twice", "no_config", "context_length_none", "no_inputs"])
def test_the_onnxruntime_backend_refuses_a_clip_export_json_it_cannot_use(tmp_path, defect):
    from mindram.backends.onnxruntime import ONNXRuntimeCLIP
    from mindram.models.clip.configuration import CLIPConfig

    out = write_export(tmp_path / "e")
    manifest = json.loads((out / "export.json").read_text())
    manifest.update(config=CLIPConfig.from_pretrained("clip_vit_b_32").to_dict(), tokenizer={"context_length": 77})
    (out / "export.json").write_text(json.dumps(manifest))
    assert ONNXRuntimeCLIP(out).towers == ["image"]
    graph = manifest["graphs"]["image_encoder"]
    if defect == "no_tower":
        graph.pop("tower")
    elif defect == "tower_twice":
        manifest["graphs"]["copy"] = dict(graph)
    elif defect == "no_config":
        manifest.pop("config")
    elif defect == "context_length_none":
        manifest["tokenizer"]["context_length"] = None
    else:
        graph["inputs"] = []
    (out / "export.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="export.json") as raised:
        ONNXRuntimeCLIP(out)
    assert "\n" not in str(raised.value)


# --- fuzzing ------------------------------------------------------------------------------------------------

def mutate_json(value, rng, depth=0):
    """``value`` with one random change somewhere inside: a value replaced, a key dropped or a list cut."""
    odd = [None, -1, 0, 1, 10 ** 12, -0.0, 1e308, float("nan"), "", "../x", "/etc/passwd", True, [], {}, [1, 2],
           "a" * 300]
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = list(value)[int(rng.integers(len(value)))]
        choice = rng.random()
        out = dict(value)
        if choice < 0.15:
            del out[key]
        elif choice < 0.35:
            out[key] = odd[int(rng.integers(len(odd)))]
        else:
            out[key] = mutate_json(value[key], rng, depth + 1)
        return out
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = int(rng.integers(len(value)))
        out = list(value)
        choice = rng.random()
        if choice < 0.2:
            return out[:i]
        if choice < 0.3:
            return out + out[:1]
        out[i] = mutate_json(value[i], rng, depth + 1) if rng.random() < 0.6 else odd[int(rng.integers(len(odd)))]
        return out
    return odd[int(rng.integers(len(odd)))]


def mutate_bytes(data, rng):
    data = bytearray(data)
    kind = rng.integers(3)
    at = int(rng.integers(len(data)))
    if kind == 0:
        data[at] ^= int(rng.integers(1, 256))
    elif kind == 1:
        del data[at:]
    else:
        data[at:at] = rng.integers(0, 256, int(rng.integers(1, 40))).astype(np.uint8).tobytes()
    return bytes(data)


def fuzz(rounds, once):
    """Run ``once(rng)`` ``rounds`` times; returns (elapsed s, slowest s, peak traced bytes)."""
    rng = np.random.default_rng(2024)
    slowest, start = 0.0, time.monotonic()
    tracemalloc.start()
    for _ in range(rounds):
        t0 = time.monotonic()
        once(rng)
        slowest = max(slowest, time.monotonic() - t0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return time.monotonic() - start, slowest, peak


def test_fuzzed_stores_give_typed_errors_or_the_stored_vectors(tmp_path):
    valid = write_store(tmp_path / "valid", items=10, shard_size=4, bad=(2,), kind="text")
    files = sorted(p.name for p in valid.iterdir())
    originals = {name: (valid / name).read_bytes() for name in files}
    want_ids, want = expected(items=10, bad=(2,))
    outcomes = {"refused": 0, "read": 0}
    store = tmp_path / "mutant"
    store.mkdir()

    def once(rng):
        for name, data in originals.items():
            (store / name).write_bytes(data)
        name = files[int(rng.integers(len(files)))]
        if name.endswith(".json") and rng.random() < 0.7:
            (store / name).write_text(json.dumps(mutate_json(json.loads(originals[name]), rng)))
        else:
            (store / name).write_bytes(mutate_bytes(originals[name], rng))
        try:
            ids, vectors = load_embeddings(store)
        except DataError as e:
            assert "\n" not in str(e)
            outcomes["refused"] += 1
            return
        outcomes["read"] += 1
        # what is read is what is stored: every row, in input order, its id from its shard's .json and its values
        # from its shard's .npy (neither has a checksum: a changed id or value in them is read as stored)
        assert vectors.dtype == np.float32 and vectors.shape == want.shape and len(ids) == len(want_ids)
        for r, (item_id, row) in enumerate(zip(ids, vectors)):
            shard = f"shard_{int(want_ids[r][4:]) // 4:05d}"
            if name != f"{shard}.json":
                assert item_id == want_ids[r]
            if name != f"{shard}.npy":
                np.testing.assert_array_equal(row, want[r])

    elapsed, slowest, peak = fuzz(300, once)
    print(outcomes, f"{elapsed:.1f} s, slowest {slowest * 1e3:.0f} ms, peak {peak / MiB:.1f} MiB")
    assert outcomes["refused"] > 100 and outcomes["read"] > 10
    assert elapsed < 30 and slowest < 3 and peak < 16 * MiB


def test_fuzzed_export_json_gives_typed_errors_or_a_usable_manifest(tmp_path):
    valid = write_export(tmp_path / "valid")
    original = json.loads((valid / "export.json").read_text())
    (tmp_path / "x").write_bytes(b"outside")
    outcomes = {"refused": 0, "read": 0}

    def once(rng):
        manifest = mutate_json(original, rng)
        text = json.dumps(manifest) if rng.random() < 0.85 else mutate_bytes(json.dumps(original).encode(), rng)
        path = valid / "export.json"
        (path.write_text if isinstance(text, str) else path.write_bytes)(text)
        try:
            got = read_manifest(valid, fmt="onnx")
            processor = CLIPImageProcessor.from_dict(got["preprocessing"])
        except ConfigError as e:
            assert "\n" not in str(e)
            outcomes["refused"] += 1
            return
        outcomes["read"] += 1
        for graph in got["graphs"].values():
            assert (valid / graph["files"]["onnx"]["path"]).resolve().parent == valid.resolve()
        assert all(s > 0 for s in processor.std) and processor.image_size == 32

    elapsed, slowest, peak = fuzz(300, once)
    print(outcomes, f"{elapsed:.1f} s, slowest {slowest * 1e3:.0f} ms, peak {peak / MiB:.1f} MiB")
    assert outcomes["refused"] > 100 and outcomes["read"] > 10
    assert elapsed < 30 and slowest < 3 and peak < 16 * MiB

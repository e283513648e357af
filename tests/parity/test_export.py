"""Per-tower export: ONNX (onnxruntime) and MindIR (``mindspore.load`` + ``nn.GraphCell``) towers of the converted
random ViT-B/32 (exact GELU and QuickGELU) match mindram and open_clip within 1e-4 at batch 1 and 5; the
manifest, fixed-batch/int32 exports, the backend's checks and the CLI on a tiny model."""
import json

import mindspore as ms
import numpy as np
import pytest

import mindram
from mindram.backends import load_backend
from mindram.errors import ConfigError, OutputExistsError
from mindram.export import read_manifest
from mindram.export.__main__ import main as export_main
from mindram.export.mindir import load_mindir
from mindram.models.clip.convert import convert_state_dict
from tests.parity.clip_reference import encode, random_pixels, reference_model
from tests.unit.test_clip_model import tiny

TOL = 1e-4
TEXTS = ["a photo of a cat", "a diagram of a transformer block, drawn by hand", "", "🐱 猫 &amp; dog's toy 42",
         "two dogs playing in the snow"]
CASES = [("ViT-B-32", "clip_vit_b_32.laion2b_s34b_b79k", "gelu"), ("ViT-B-32-quickgelu", "clip_vit_b_32", "quick_gelu")]


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def exported(request, tmp_path_factory):
    """(open_clip model, mindram model, export dir) of one converted random ViT-B/32, exported with a dynamic
    batch axis in both formats."""
    name, weights, act = request.param
    ref = reference_model(name)
    model = mindram.CLIPModel(mindram.CLIPConfig.from_pretrained(weights))
    model.load_weights(convert_state_dict({k: v.numpy() for k, v in ref.state_dict().items()}))
    model.set_train(False)
    assert model.config.vision_config.hidden_act == act
    out = tmp_path_factory.mktemp(f"export-{name}")
    model.export(out, formats="both", dynamic_batch=True, model_name=weights)
    return ref, model, out


def _max_diff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


@pytest.mark.slow
def test_onnx_and_mindir_towers_match_mindram_and_open_clip(exported):
    ref, model, out = exported
    onnx_model = load_backend("onnxruntime", out, verify=False)  # the manifest test checks the hashes
    mindir_image = load_mindir(out / "image_encoder.mindir")
    mindir_text = load_mindir(out / "text_encoder.mindir")
    # references for both batches in one call each (rows are independent): batch 1 is row 0, batch 5 rows 1-5
    pixels = random_pixels(6, 224, seed=3)
    ids = mindram.tokenize(TEXTS[:1] + TEXTS)
    references = {"open_clip": encode(ref, pixels, ids),
                  "mindram": (model.get_image_features(pixels).asnumpy(), model.get_text_features(ids).asnumpy())}
    for rows in (slice(0, 1), slice(1, 6)):
        batch_pixels, batch_ids = pixels[rows], ids[rows].astype(np.int64)
        candidates = {
            "onnx": (onnx_model.get_image_features(batch_pixels), onnx_model.get_text_features(batch_ids)),
            "mindir": (mindir_image(ms.Tensor(batch_pixels)).asnumpy(), mindir_text(ms.Tensor(batch_ids)).asnumpy()),
        }
        for fmt, (image, text) in candidates.items():
            for source, (ref_image, ref_text) in references.items():
                for what, got, expected in [("image", image, ref_image[rows]), ("text", text, ref_text[rows])]:
                    diff = _max_diff(got, expected)
                    assert diff <= TOL, f"{fmt} {what} vs {source}, batch {len(batch_ids)}: max |diff| {diff}"


@pytest.mark.slow
def test_manifest_describes_the_export(exported):
    _, model, out = exported
    manifest = read_manifest(out)  # checks sizes and sha256 of every file
    assert manifest["family"] == "clip" and manifest["mindspore_version"] == ms.__version__
    assert manifest["onnx_opset"] == 17 and manifest["dynamic_batch"] is True and manifest["batch_size"] is None
    assert len(manifest["weights_sha256"]) == 64
    assert manifest["preprocessing"] == model.image_processor.to_dict()
    assert manifest["preprocessing"]["interpolation"] == "bicubic" and manifest["tokenizer"]["context_length"] == 77
    image, text = manifest["graphs"]["image_encoder"], manifest["graphs"]["text_encoder"]
    assert image["inputs"] == [{"name": "image", "shape": ["batch", 3, 224, 224], "dtype": "float32"}]
    assert text["inputs"] == [{"name": "text", "shape": ["batch", 77], "dtype": "int64"}]
    assert image["outputs"] == [{"name": "image_embed", "shape": ["batch", 512], "dtype": "float32"}]
    assert not image["normalized"] and not text["normalized"]
    assert sorted(image["files"]) == ["mindir", "onnx", "onnx_data"]   # full-size weights beside the graph


@pytest.fixture(scope="module")
def tiny_model():
    model = mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32.laion2b_s34b_b79k")))
    model.set_train(False)
    return model


def test_fixed_batch_int32_export_feeds_any_batch(tiny_model, tmp_path):
    manifest = tiny_model.export(tmp_path / "e", formats="onnx", batch_size=2, text_dtype="int32")
    assert manifest["graphs"]["text_encoder"]["inputs"][0] == {"name": "text", "shape": [2, 77], "dtype": "int32"}
    assert not (tmp_path / "e" / "image_encoder.mindir").exists()
    backend = load_backend("onnxruntime", tmp_path / "e")
    pixels = random_pixels(3, 32)
    ids = mindram.tokenize(TEXTS[:3])
    assert backend.graphs == {} and backend.towers == ["image", "text"]   # sessions open at first use
    assert _max_diff(backend.get_image_features(pixels), tiny_model.get_image_features(pixels).asnumpy()) <= 1e-5
    assert sorted(backend.graphs) == ["image"]
    assert _max_diff(backend.get_text_features(ids), tiny_model.get_text_features(ids).asnumpy()) <= 1e-5
    # ONNX Runtime's memory pattern is off unless asked for (it raised large batches' peak memory)
    assert not backend.graphs["image"].session.get_session_options().enable_mem_pattern
    planned = load_backend("onnxruntime", tmp_path / "e", memory_pattern=True)
    assert _max_diff(planned.get_text_features(ids), backend.get_text_features(ids)) == 0
    assert planned.graphs["text"].session.get_session_options().enable_mem_pattern
    unpacked = load_backend("onnxruntime", tmp_path / "e", prepack=False)
    assert _max_diff(unpacked.get_image_features(pixels), backend.get_image_features(pixels)) <= 1e-5
    config = unpacked.graphs["image"].session.get_session_options().get_session_config_entry
    assert config("session.disable_prepacking") == "1"


def test_dynamic_batch_graphs_run_in_micro_batches(tiny_model, tmp_path, monkeypatch):
    """``max_batch_tokens`` feeds a dynamic-batch graph in power-of-two calls (17 tokens per image, 77 per
    text); the features are those of one call."""
    from mindram.backends.onnxruntime import ExportedGraph
    tiny_model.export(tmp_path / "e", formats="onnx", dynamic_batch=True)
    whole = load_backend("onnxruntime", tmp_path / "e", max_batch_tokens=None)
    split = load_backend("onnxruntime", tmp_path / "e", max_batch_tokens=70)
    calls = []
    run = ExportedGraph._run
    monkeypatch.setattr(ExportedGraph, "_run", lambda self, array: calls.append(len(array)) or run(self, array))
    pixels, ids = random_pixels(5, 32), mindram.tokenize(TEXTS[:3])
    assert _max_diff(split.get_image_features(pixels), whole.get_image_features(pixels)) <= 1e-5
    assert calls == [4, 1, 5]   # 4 images (68 tokens) per call
    assert _max_diff(split.get_text_features(ids), whole.get_text_features(ids)) <= 1e-5
    assert calls[3:] == [1, 1, 1, 3]   # a text alone exceeds 70 tokens: one per call


def test_large_onnx_keeps_weights_beside_the_graph(tiny_model, tmp_path, monkeypatch):
    import mindram.export.common as common
    monkeypatch.setattr(common, "ONNX_INLINE_WEIGHTS_LIMIT", 0)  # as if the tower were a full-size one
    manifest = tiny_model.export(tmp_path / "e", formats="onnx", towers="image", dynamic_batch=True)
    files = manifest["graphs"]["image_encoder"]["files"]
    assert sorted(files) == ["onnx", "onnx_data"] and files["onnx_data"]["path"] == "image_encoder.onnx.data"
    assert files["onnx_data"]["bytes"] > files["onnx"]["bytes"]
    modes = {(tmp_path / "e" / f["path"]).stat().st_mode & 0o777 for f in files.values()}
    assert modes == {(tmp_path / "e" / "export.json").stat().st_mode & 0o777}   # not owner-only
    pixels = random_pixels(2, 32)
    got = load_backend("onnxruntime", tmp_path / "e").get_image_features(pixels)
    assert _max_diff(got, tiny_model.get_image_features(pixels).asnumpy()) <= 1e-5
    (tmp_path / "e" / "image_encoder.onnx.data").unlink()
    with pytest.raises(ConfigError, match="image_encoder.onnx.data: listed in"):
        load_backend("onnxruntime", tmp_path / "e")


def test_one_tower_and_refusals(tiny_model, tmp_path):
    tiny_model.export(tmp_path / "e", formats="mindir", towers="text")
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["export.json", "text_encoder.mindir"]
    with pytest.raises(OutputExistsError, match="already holds an export"):
        tiny_model.export(tmp_path / "e")
    with pytest.raises(ConfigError, match="no onnx file"):
        load_backend("onnxruntime", tmp_path / "e")
    with pytest.raises(ConfigError, match="--towers"):
        tiny_model.export(tmp_path / "f", towers="image,audio")
    with pytest.raises(ConfigError, match="format"):
        tiny_model.export(tmp_path / "f", formats="tflite")


@pytest.mark.slow
def test_pipelines_run_an_export_with_onnxruntime(tiny_model, tmp_path):
    tiny_model.export(tmp_path / "e", formats="onnx", dynamic_batch=True)
    images = [np.random.default_rng(i).integers(0, 255, (40, 30 + 7 * i, 3), dtype=np.uint8) for i in range(3)]
    fe = mindram.pipeline("feature_extraction", model=tmp_path / "e", backend="onnxruntime", batch_size=2)
    reference = mindram.pipeline("feature_extraction", model=tiny_model, batch_size=2)
    assert _max_diff(fe(images=images), reference(images=images)) <= 1e-5
    assert _max_diff(fe(texts=TEXTS), reference(texts=TEXTS)) <= 1e-5
    options = dict(candidate_labels=["a cat", "a dog", "a car"], image_processor={"interpolation": "bilinear"})
    clf = mindram.pipeline("zero_shot_image_classification", model=tmp_path / "e", backend="onnxruntime", **options)
    expected = mindram.pipeline("zero_shot_image_classification", model=tiny_model, **options)(images)
    for got, want in zip(clf(images), expected):
        assert [r["label"] for r in got] == [r["label"] for r in want]
        assert np.allclose([r["score"] for r in got], [r["score"] for r in want], atol=1e-5)


def test_backend_checks_the_files(tiny_model, tmp_path):
    tiny_model.export(tmp_path / "e", formats="onnx", towers="image", dynamic_batch=True)
    backend = load_backend("onnxruntime", tmp_path / "e")
    with pytest.raises(ConfigError, match="text tower was not exported"):
        backend.get_text_features(mindram.tokenize(["a"]))
    onnx_file = tmp_path / "e" / "image_encoder.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[-1] ^= 1
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="sha256"):
        load_backend("onnxruntime", tmp_path / "e")
    onnx_file.write_bytes(bytes(data[:-1]))
    with pytest.raises(ConfigError, match="bytes"):
        load_backend("onnxruntime", tmp_path / "e")
    with pytest.raises(ConfigError, match="no export.json"):
        load_backend("onnxruntime", tmp_path)
    with pytest.raises(ConfigError, match="backend"):
        mindram.pipeline("feature_extraction", model=tmp_path / "e", backend="tensorrt")


def test_cli_exports_a_saved_model(tiny_model, tmp_path, capsys):
    tiny_model.save_pretrained(tmp_path / "saved")
    code = export_main(["--model", str(tmp_path / "saved"), "--format", "onnx", "--output", str(tmp_path / "e"),
                        "--dynamic_batch"])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "e" / "export.json").read_text())
    assert manifest["model"] == str(tmp_path / "saved") and manifest["dynamic_batch"] is True
    assert "image_encoder onnx" in capsys.readouterr().out
    code = export_main(["--model", str(tmp_path / "saved"), "--format", "onnx", "--output", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert code == 2 and "already holds an export" in err and len(err.strip().splitlines()) == 1
    code = export_main(["--model", str(tmp_path / "missing"), "--output", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "missing" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_ram_plus_tagger_export_gives_the_models_tags(tmp_path):
    import mindram.models.ram as ram
    from mindram.export import ExportedTagger
    from mindram.models.ram.convert import convert_state_dict as convert_ram
    from tests.conftest import ROOT
    from tests.fixtures.ram.loader import fixture_config, reference_state_dict

    config = fixture_config("ram_plus")
    model = ram.RAMPlus(config)
    model.load_weights(convert_ram(reference_state_dict("ram_plus"), config)[0])
    model.set_train(False)
    manifest = model.export(tmp_path / "tagger", formats="mindir", dynamic_batch=True)
    vocabulary = manifest["vocabulary"]
    assert vocabulary["names"] == model.tag_list and vocabulary["names_chinese"] == model.tag_list_chinese
    assert np.allclose(vocabulary["thresholds"], model.class_threshold)
    with pytest.raises(ConfigError, match="only --format mindir"):
        model.export(tmp_path / "onnx", formats="onnx")
    images = sorted(str(p) for p in (ROOT / "examples" / "images").glob("*.jpg"))
    tagger = ExportedTagger(tmp_path / "tagger")  # the exported graph and the manifest alone
    english, chinese = tagger.generate_tag(images)
    pixels = model.image_processor(images)
    assert (english, chinese) == tuple(model.generate_tag(pixels))
    assert any(english)  # non-trivial: some tags fire
    assert np.abs(tagger.get_tag_logits(pixels) - model.get_tag_logits(pixels)).max() <= TOL


@pytest.mark.slow
def test_onnxruntime_backend_exports_a_model_once_and_reuses_it(tiny_model, tmp_path, monkeypatch):
    """backend='onnxruntime' on a saved model (not an export): exported into $MINDRAM_HOME/exports on first use,
    the same export afterwards, a new one when the checkpoint changes; features as MindSpore's."""
    import mindram.export as export_package
    from mindram.backends import export_cache
    saved = tiny_model.save_pretrained(tmp_path / "saved")
    exports = []
    real_export = export_package.export_model
    monkeypatch.setattr(export_package, "export_model", lambda *a, **k: exports.append(a[1]) or real_export(*a, **k))
    fe = mindram.pipeline("feature_extraction", model=saved, backend="onnxruntime", batch_size=2)
    reference = mindram.pipeline("feature_extraction", model=tiny_model, batch_size=2)
    assert _max_diff(fe(texts=TEXTS), reference(texts=TEXTS)) <= 1e-5
    folder = export_cache.cached_export(saved)
    assert len(exports) == 1 and folder.parent == mindram.utils.io.mindram_home() / "exports"
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]   # no temporary left behind
    assert load_backend("onnxruntime", saved).export_dir == folder and len(exports) == 1   # reused
    changed = mindram.CLIPModel(tiny_model.config)
    changed.save_pretrained(tmp_path / "saved")   # new weights in the same place: a new export
    newer = export_cache.cached_export(saved)
    assert newer != folder and len(exports) == 2
    monkeypatch.setattr(export_cache, "ONNX_INLINE_WEIGHTS_LIMIT", 2**40)   # as an export of another file layout
    assert export_cache.cached_export(saved) != newer and len(exports) == 3
    with pytest.raises(ConfigError, match="model instance cannot be exported"):
        load_backend("onnxruntime", tiny_model)

"""The seeds' offline flow end to end, as documented in the README ("Deploy: export and offline vectors"):
export the towers → embed a folder of images and a caption file with onnxruntime into one .npy per item →
recall@1/5/10 in both directions; the numbers equal those of the MindSpore model's own features."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import mindram
from mindram.metrics import retrieval_recall_at_k
from tests.conftest import ROOT
from tests.unit.test_clip_model import tiny

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30),
           "black": (10, 10, 10), "white": (245, 245, 245)}


def run(*args):
    env = dict(os.environ, GLOG_v="3")
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env,
                            cwd=str(ROOT), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def metrics_of(stdout):
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\S+_R@\d+): ([\d.]+)$", stdout, re.M)}


def saved_tiny_model(directory):
    """A tiny GELU CLIP in eval mode, saved to ``directory`` (``save_pretrained``)."""
    model = mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32.laion2b_s34b_b79k")))
    model.set_train(False)
    model.save_pretrained(directory)
    return model


def write_caption_set(folder, seed, size, captions):
    """One noisy JPEG of ``size`` (h, w) per colour in ``folder`` and a Flickr-style ``captions.txt`` holding
    ``captions(name)`` for each image."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    lines = ["image,caption"]
    for name, colour in COLOURS.items():
        pixels = np.clip(np.array(colour) + rng.normal(0, 20, (*size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{name}.jpg")
        lines += [f"{name}.jpg,{caption}" for caption in captions(name)]
    (folder / "captions.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_export_embed_and_recall_with_onnxruntime(tmp_path):
    model = saved_tiny_model(tmp_path / "model")
    images = tmp_path / "flickr_tiny"
    write_caption_set(images, 0, (40, 48), lambda name: [f"a {name} square", f"something {name}"])

    out = run("-m", "mindram.export", "--model", tmp_path / "model", "--format", "onnx", "--output",
              tmp_path / "export", "--dynamic_batch")
    assert "image_encoder onnx" in out and "text_encoder onnx" in out
    out = run("scripts/export_embeddings.py", "--backend", "onnxruntime", "--model", tmp_path / "export",
              "--images", images, "--captions", images / "captions.txt", "--out", tmp_path / "vectors",
              "--layout", "npy", "--batch_size", "4", "--evaluate")
    got = metrics_of(out)

    # the seeds' layout: one vector per file, captions named <image stem>_<k>
    assert sorted(p.name for p in (tmp_path / "vectors" / "images").glob("*.npy")) == \
        sorted(f"{n}.npy" for n in COLOURS)
    assert sorted(p.name for p in (tmp_path / "vectors" / "texts").glob("*.npy")) == \
        sorted(f"{n}_{k}.npy" for n in COLOURS for k in (0, 1))
    # the same numbers from the MindSpore model itself
    names = sorted(COLOURS)
    fe = mindram.pipeline("feature_extraction", model=model)
    image_features = fe(images=[str(images / f"{n}.jpg") for n in names])
    captions = [c for n in names for c in (f"a {n} square", f"something {n}")]
    text_features = fe(texts=captions)
    np.testing.assert_allclose(np.load(tmp_path / "vectors" / "images" / "red.npy"),
                               image_features[names.index("red")], atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "vectors" / "texts" / "red_1.npy"),
                               text_features[2 * names.index("red") + 1], atol=1e-5)
    expected = retrieval_recall_at_k(image_features, text_features, np.repeat(np.arange(len(names)), 2))
    assert set(got) == {f"{d}_R@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)}, out
    for key, value in expected.items():
        assert got[key] == pytest.approx(100 * value, abs=0.006), (key, got, expected)

    # the vectors on disk evaluated alone, as vectors made elsewhere would be
    from scripts.export_embeddings import main
    again = main(["--image_vectors", str(tmp_path / "vectors" / "images"),
                  "--text_vectors", str(tmp_path / "vectors" / "texts")])
    for key, value in expected.items():
        assert again[key] == pytest.approx(value, abs=1e-6)


def run_in(cwd, *args):
    """A command run from ``cwd`` (its paths relative to it); the repository is importable from anywhere."""
    env = dict(os.environ, GLOG_v="3", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env,
                            cwd=str(cwd), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def ais_bench_infer(onnx_path, input_dir, output_dir, input_dtype, input_shape):
    """What ``python -m ais_bench --model M.om --input INPUT_DIR --output om_outputs --output_dirname X --outfmt NPY``
    does with a batch-1 model (its infer code, read from the Ascend tools repository): the .npy/.bin files of the
    folder (one level, sorted), each fed as the model's input (a .bin as its raw bytes), each output i written as
    ``<input name up to its first '.'>_<i>.npy`` with its batch axis, (1, D). The OM model is run here by
    onnxruntime on the ONNX file ATC would convert."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    output_dir.mkdir(parents=True)
    files = sorted(f for f in os.listdir(input_dir) if f.lower().endswith((".npy", ".bin")))
    for name in files:
        path = input_dir / name
        data = np.load(path) if name.lower().endswith(".npy") else np.fromfile(path, dtype=np.int8)
        tensor = np.frombuffer(data.tobytes(), dtype=input_dtype).reshape(input_shape)
        for i, out in enumerate(session.run(None, {session.get_inputs()[0].name: tensor})):
            np.save(output_dir / f"{name.split('.')[0]}_{i}.npy", out)
    return files


@pytest.mark.slow
def test_guide_flow_preprocess_ais_bench_and_score_from_a_relative_cwd(tmp_path):
    saved_tiny_model(tmp_path / "model")
    data = tmp_path / "flickr30k_test1k"
    write_caption_set(data, 1, (36, 44), lambda name: [f"a {name} square", f"something {name}", name])
    script = ROOT / "scripts" / "export_embeddings.py"

    # batch 1, as the guide's OM models; every path below is relative to the working directory
    run_in(tmp_path, "-m", "mindram.export", "--model", "model", "--format", "onnx", "--output", "models")
    out = run_in(tmp_path, script, "--preprocess_only", "--backend", "onnxruntime", "--model", "models", "--images",
                 "flickr30k_test1k", "--captions", "flickr30k_test1k/captions.txt", "--out", "prep_data",
                 "--input_format", "bin")
    assert "images: 6 inputs written" in out and "texts: 18 inputs written" in out, out
    assert sorted(os.listdir(tmp_path / "prep_data" / "texts"))[:4] == \
        ["black_0.bin", "black_1.bin", "black_2.bin", "blue_0.bin"]
    ais_bench_infer(tmp_path / "models" / "image_encoder.onnx", tmp_path / "prep_data" / "images",
                    tmp_path / "om_outputs" / "vision_embed_bs1", np.float32, (1, 3, 32, 32))
    ais_bench_infer(tmp_path / "models" / "text_encoder.onnx", tmp_path / "prep_data" / "texts",
                    tmp_path / "om_outputs" / "text_embed_bs1", np.int64, (1, 77))
    assert (tmp_path / "om_outputs" / "text_embed_bs1" / "red_2_0.npy").is_file()
    scored = metrics_of(run_in(tmp_path, script, "--image_vectors", "om_outputs/vision_embed_bs1",
                               "--text_vectors", "om_outputs/text_embed_bs1"))

    # the onnxruntime backend path over the same images and captions
    backend = metrics_of(run_in(tmp_path, script, "--backend", "onnxruntime", "--model", "models", "--images",
                                "flickr30k_test1k", "--captions", "flickr30k_test1k/captions.txt", "--out", "vectors",
                                "--layout", "npy", "--evaluate"))
    assert len(scored) == 6 and scored == backend, (scored, backend)
    om = np.load(tmp_path / "om_outputs" / "text_embed_bs1" / "red_2_0.npy")[0]   # un-normalised, as the OM's
    np.testing.assert_allclose(om / np.linalg.norm(om), np.load(tmp_path / "vectors" / "texts" / "red_2.npy"),
                               atol=1e-5)

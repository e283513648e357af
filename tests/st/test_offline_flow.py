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


@pytest.mark.slow
def test_export_embed_and_recall_with_onnxruntime(tmp_path):
    model = mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32.laion2b_s34b_b79k")))
    model.set_train(False)
    model.save_pretrained(tmp_path / "model")
    images = tmp_path / "flickr_tiny"
    images.mkdir()
    rng = np.random.default_rng(0)
    lines = ["image,caption"]
    for name, colour in COLOURS.items():
        pixels = np.clip(np.array(colour) + rng.normal(0, 20, (40, 48, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"{name}.jpg")
        lines += [f"{name}.jpg,a {name} square", f"{name}.jpg,something {name}"]
    (images / "captions.txt").write_text("\n".join(lines) + "\n")

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

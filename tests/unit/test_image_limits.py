"""Hostile images and folders: the pixel budget (stored and resized size, from the header), regular files only,
symbolic links that would leave a user-given folder, and batch work that skips what is refused."""
import json
import logging
import os
import struct
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mindram.data.image_folder import ImageFolder
from mindram.errors import ConfigError, DataError
from mindram.models.clip.image_processing import CLIPImageProcessor
from mindram.models.clip.image_processing import _to_uint8_16bit  # pylint: disable=protected-access
from mindram.models.ram.image_processing import RAMImageProcessor
from mindram.pipeline.base import Pipeline
from mindram.tools.image_tools import load_image
from mindram.utils.image_files import (DEFAULT_MAX_IMAGE_PIXELS, MAX_PIXELS_ENV, list_image_files,
                                       max_image_pixels)
from mindram.utils.jsonl_predictions import IMAGE_SUFFIXES, expand_inputs

ROOT = Path(__file__).resolve().parents[2]
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
needs_symlinks = pytest.mark.skipif(sys.platform == "win32", reason="symbolic links need privileges on Windows")


def png_header_only(width, height, bit_depth=16, colour_type=0):
    """A PNG whose IHDR says ``width x height`` and whose pixel data is a few bytes: what a hostile upload looks
    like before decoding (a real 13000x13000 16-bit PNG of one colour is only ~330 KB)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture
def tall_png(tmp_path):
    path = tmp_path / "tall.png"
    Image.new("L", (1, 200_000), 128).save(path)   # a few hundred bytes
    return path


def run_with_timeout(function, seconds=5.0):
    """``function()``'s result or exception, failing the test (instead of hanging it) after ``seconds``."""
    box = {}

    def target():
        try:
            box["result"] = function()
        except BaseException as e:  # pylint: disable=broad-except  # handed to the test
            box["error"] = e
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still blocked after {seconds} s")
    if "error" in box:
        raise box["error"]
    return box.get("result")


# ---- the pixel budget ----

def test_budget_default_env_and_argument(monkeypatch):
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS == 25_000_000
    monkeypatch.setenv(MAX_PIXELS_ENV, "100_000_000")
    assert max_image_pixels() == 100_000_000
    assert max_image_pixels(1234) == 1234
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ConfigError, match=f"{MAX_PIXELS_ENV}='lots': expected a positive int"):
        max_image_pixels()
    with pytest.raises(ConfigError, match="max_pixels"):
        CLIPImageProcessor(max_pixels=0)


def test_extreme_aspect_ratio_is_refused_from_its_resized_size(tall_png):
    # shortest side 1 -> 32: the long side would become 6.4 million pixels (205 megapixels of 'L')
    with pytest.raises(DataError, match=r"tall\.png: .*resized .*32x6400000 = 204\.8 megapixels, over the limit "
                                        r"of 25 megapixels") as info:
        CLIPImageProcessor(image_size=32).preprocess(tall_png)
    assert "\n" not in str(info.value) and MAX_PIXELS_ENV in str(info.value)
    # squash resizing bounds the result; "longest" would round the short side to 0 pixels (PIL: ValueError)
    assert RAMImageProcessor(image_size=32).preprocess(tall_png).shape == (3, 32, 32)
    with pytest.raises(DataError, match=r"resized \(longest, image_size 32\) to 0x32, an empty image"):
        CLIPImageProcessor(image_size=32, resize_mode="longest").preprocess(tall_png)
    wide = Image.new("RGB", (200_000, 1))
    with pytest.raises(DataError, match=r"PIL image.*resized"):
        CLIPImageProcessor(image_size=32).preprocess(wide)


def test_resized_bound_follows_the_budget(tall_png, monkeypatch):
    # image_size 2: 1x200000 resizes to 2x400000 = 800,000 pixels
    assert CLIPImageProcessor(image_size=2, max_pixels=1_000_000).preprocess(tall_png).shape == (3, 2, 2)
    with pytest.raises(DataError, match="2x400000 = 0.8 megapixels, over the limit of 0.5 megapixels"):
        CLIPImageProcessor(image_size=2, max_pixels=500_000).preprocess(tall_png)
    monkeypatch.setenv(MAX_PIXELS_ENV, "500000")
    with pytest.raises(DataError, match="over the limit of 0.5 megapixels"):
        CLIPImageProcessor(image_size=2).preprocess(tall_png)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_huge_16bit_png_is_refused_from_its_header(tmp_path):
    path = tmp_path / "big16.png"
    path.write_bytes(png_header_only(13_000, 13_000))
    with pytest.raises(DataError, match=r"big16\.png: 13000x13000 = 169\.0 megapixels, over the limit of 25 "):
        CLIPImageProcessor(image_size=32).preprocess(path)
    with pytest.raises(DataError, match="169.0 megapixels"):
        RAMImageProcessor(image_size=32).preprocess(path)
    with pytest.raises(DataError, match="169.0 megapixels"):
        load_image(path)


def test_16bit_image_under_a_small_budget(tmp_path, monkeypatch):
    path = tmp_path / "g16.png"
    Image.fromarray(np.full((300, 400), 40_000, dtype=np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    monkeypatch.setenv(MAX_PIXELS_ENV, "100000")   # 120,000 pixels stored
    with pytest.raises(DataError, match="400x300 = 0.1 megapixels, over the limit of 0.1 megapixels"):
        CLIPImageProcessor(image_size=8).preprocess(path)
    out = CLIPImageProcessor(image_size=8, max_pixels=120_000).preprocess(path)
    grey = round(40_000 / 257) / 255                # the documented 16-bit rule: value / 257, rounded
    expected = (grey - np.array([0.48145466, 0.4578275, 0.40821073])) / np.array([0.26862954, 0.26130258, 0.27577711])
    np.testing.assert_allclose(out[:, 0, 0], expected, atol=1e-5)


def test_in_memory_images_are_checked_before_conversion(monkeypatch):
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    processor = CLIPImageProcessor(image_size=8)
    with pytest.raises(DataError, match=r"numpy image \(40, 30\): 30x40 = 0.0 megapixels"):
        processor.preprocess(np.zeros((40, 30), dtype=np.uint16))
    with pytest.raises(DataError, match="PIL image: 50x21"):
        processor.preprocess(Image.new("RGB", (50, 21)))
    assert processor.preprocess(np.zeros((20, 20, 3), dtype=np.uint8)).shape == (3, 8, 8)


def test_16bit_scaling_is_value_over_257_rounded_for_every_value():
    values = np.arange(65536, dtype=np.uint16)
    np.testing.assert_array_equal(_to_uint8_16bit(values), np.rint(values / 257.0).astype(np.uint8))


# ---- regular files only ----

@needs_fifo
def test_fifo_named_like_an_image_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "f.png"
    os.mkfifo(fifo)
    for read in (CLIPImageProcessor(image_size=8).preprocess, RAMImageProcessor(image_size=8).preprocess,
                 load_image):
        with pytest.raises(DataError, match=r"f\.png is a FIFO, not a regular file"):
            run_with_timeout(lambda: read(fifo))   # pylint: disable=cell-var-from-loop
    with pytest.raises(DataError, match="is a folder, not a regular file"):
        CLIPImageProcessor(image_size=8).preprocess(tmp_path)
    with pytest.raises(FileNotFoundError, match="image file not found"):
        CLIPImageProcessor(image_size=8).preprocess(tmp_path / "missing.png")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@needs_fifo
def test_app_check_image_refuses_a_fifo_and_uses_the_budget(tmp_path, monkeypatch):
    from mindram.app.service import check_image   # pylint: disable=import-outside-toplevel
    fifo = tmp_path / "upload.png"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="upload.png is a FIFO"):
        run_with_timeout(lambda: check_image(str(fifo)))
    big = tmp_path / "big16.png"
    big.write_bytes(png_header_only(13_000, 13_000))
    with pytest.raises(DataError, match="13000x13000 = 169.0 megapixels"):
        check_image(str(big))
    small = tmp_path / "small.png"
    Image.new("RGB", (100, 100)).save(small)
    assert check_image(str(small)) == str(small)
    monkeypatch.setenv(MAX_PIXELS_ENV, "5000")   # the app's default budget is the shared one
    with pytest.raises(DataError, match="100x100"):
        check_image(str(small))
    assert check_image(str(small), max_pixels=10_000) == str(small)


# ---- folders and symbolic links ----

def make_folder_with_links(tmp_path):
    """``root`` with two images, a link to an image inside, and links (file, folder) that lead outside it."""
    outside = tmp_path / "outside"
    (outside / "more").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(outside / "secret.png")
    Image.new("RGB", (8, 8)).save(outside / "more" / "x.png")
    root = tmp_path / "root"
    (root / "cls_a").mkdir(parents=True)
    (root / "cls_b").mkdir()
    Image.new("RGB", (8, 8)).save(root / "cls_a" / "one.png")
    Image.new("RGB", (8, 8)).save(root / "cls_b" / "two.png")
    os.symlink(root / "cls_a" / "one.png", root / "cls_b" / "alias.png")
    os.symlink(outside / "secret.png", root / "cls_a" / "escape.png")
    os.symlink(outside / "more", root / "cls_a" / "linked_dir")
    os.symlink(outside, root / "cls_c")        # a class folder that is a link out of the folder
    return root, outside


@needs_symlinks
def test_listing_does_not_leave_the_folder(tmp_path, caplog):
    root, outside = make_folder_with_links(tmp_path)
    with caplog.at_level(logging.WARNING):
        found = list_image_files(root, IMAGE_SUFFIXES)
    assert found == sorted([root / "cls_a" / "one.png", root / "cls_b" / "alias.png", root / "cls_b" / "two.png"])
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 3 and all("outside the folder" in m and "\n" not in m for m in warned)
    assert {m.split(":")[0] for m in warned} == {f"skipping {root / 'cls_a' / 'escape.png'}",
                                                 f"skipping {root / 'cls_a' / 'linked_dir'}",
                                                 f"skipping {root / 'cls_c'}"}
    assert any(str(outside / "secret.png") in m for m in warned)


@needs_symlinks
def test_follow_symlinks_reads_links_out_of_a_trusted_folder_without_looping(tmp_path, caplog):
    root, outside = make_folder_with_links(tmp_path)
    os.symlink(root, root / "cls_b" / "loop")       # a link back to a parent
    with caplog.at_level(logging.WARNING):
        found = list_image_files(root, IMAGE_SUFFIXES, follow_symlinks=True)
    # every real folder walked once (outside/more is reached through linked_dir or cls_c, whichever comes first)
    assert {os.path.realpath(p) for p in found} == {os.path.realpath(p) for p in (
        root / "cls_a" / "one.png", root / "cls_b" / "two.png", outside / "secret.png", outside / "more" / "x.png")}
    assert len(found) == 6 and root / "cls_a" / "escape.png" in found and root / "cls_c" / "secret.png" in found
    assert "outside the folder" not in caplog.text
    folder = ImageFolder(root, follow_symlinks=True)
    assert folder.folders == ["cls_a", "cls_b", "cls_c"]
    assert len(expand_inputs([root], follow_symlinks=True)) == len(found)


@needs_symlinks
def test_predict_folder_and_image_folder_keep_to_the_folder(tmp_path, caplog):
    root, outside = make_folder_with_links(tmp_path)
    with caplog.at_level(logging.WARNING):
        inputs = expand_inputs([root, outside / "secret.png"])   # a file named on its own is the user's choice
    assert inputs == sorted(str(p) for p in (root / "cls_a" / "one.png", root / "cls_b" / "alias.png",
                                             root / "cls_b" / "two.png")) + [str(outside / "secret.png")]
    assert "escape.png" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        folder = ImageFolder(root)
    assert folder.folders == ["cls_a", "cls_b"]
    assert sorted(item[0] for item in folder._items) == sorted(inputs[:3])  # pylint: disable=protected-access
    assert str(root / "cls_c") in caplog.text and "escape.png" in caplog.text


@needs_symlinks
def test_export_script_lists_the_folder_without_leaving_it(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import export_embeddings   # pylint: disable=import-outside-toplevel
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    root, _ = make_folder_with_links(tmp_path)
    paths, ids = export_embeddings.list_images(root)
    assert ids == ["cls_a/one.png", "cls_b/alias.png", "cls_b/two.png"]
    assert paths == [root / i for i in ids]


@needs_fifo
def test_fifo_in_a_folder_is_skipped_with_a_warning(tmp_path, caplog):
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    os.mkfifo(tmp_path / "pipe.jpg")
    with caplog.at_level(logging.WARNING):
        assert list_image_files(tmp_path, IMAGE_SUFFIXES) == [tmp_path / "ok.png"]
    assert "pipe.jpg: not a regular file" in caplog.text


# ---- batch work skips and reports a refused image ----

def test_pipeline_batch_skips_a_refused_image_and_names_it(tmp_path, tall_png, caplog):
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(good)
    worker = type("Worker", (), {"task": "feature_extraction", "image_processor": CLIPImageProcessor(image_size=32)})
    with caplog.at_level(logging.WARNING):
        pixels, ok = Pipeline.load_images(worker(), [good, tall_png, good])
    assert ok == [True, False, True] and pixels.shape == (2, 3, 32, 32)
    assert "skipping input 1" in caplog.text and "tall.png" in caplog.text and "megapixels" in caplog.text


class MeanColourModel:
    """Stands in for a CLIP model (embedding writer, pipelines): an image's vector is its mean per channel."""
    config = type("Config", (), {"image_size": 32, "checkpoint_name_or_path": None, "family": None})()
    image_processor_class = CLIPImageProcessor
    context_length = 77

    @staticmethod
    def get_image_features(pixels):
        return pixels.mean(axis=(2, 3))

    @staticmethod
    def get_text_features(ids):
        return ids[:, :3].astype(np.float32)


def test_embeddings_export_skips_a_refused_image(tmp_path, tall_png):
    from mindram.embeddings import write_embeddings   # pylint: disable=import-outside-toplevel
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(good)
    summary = write_embeddings(MeanColourModel(), [good, tall_png], tmp_path / "out", batch_size=2, progress=False,
                               image_processor=CLIPImageProcessor(image_size=32))
    assert summary["num_vectors"] == 1 and summary["num_errors"] == 1
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert errors[0]["id"] == str(tall_png) and "megapixels" in errors[0]["error"]


def test_app_hands_its_budget_to_the_pipelines_and_refuses_a_thin_strip(tall_png):
    from mindram.app.service import AppService   # pylint: disable=import-outside-toplevel
    service = AppService(clip=MeanColourModel(), max_pixels=30_000_000)
    assert service.classifier.image_processor.max_pixels == service.features.image_processor.max_pixels == 30_000_000
    # 200,000 pixels pass the header check; resized for the model it would be 32 x 6.4 M: refused, not run
    with pytest.raises(DataError, match="32x6400000 = 204.8 megapixels, over the limit of 30 megapixels"):
        service.classify(str(tall_png), "a dog, a cat")
    with pytest.raises(ConfigError, match="max_pixels"):
        AppService(max_pixels=-1)


@pytest.mark.slow   # imports gradio (several seconds)
@needs_fifo
def test_app_thumbnails_of_store_images_refuse_a_fifo_and_the_budget(tmp_path, monkeypatch):
    from mindram.app.ui import thumbnail   # pylint: disable=import-outside-toplevel
    os.mkfifo(tmp_path / "stored.png")
    with pytest.raises(DataError, match="stored.png is a FIFO"):
        run_with_timeout(lambda: thumbnail(tmp_path / "stored.png"))
    Image.new("RGB", (600, 400), (1, 2, 3)).save(tmp_path / "big.png")
    assert thumbnail(tmp_path / "big.png").size == (256, 171)
    monkeypatch.setenv(MAX_PIXELS_ENV, "100000")
    with pytest.raises(DataError, match="big.png: 600x400"):
        thumbnail(tmp_path / "big.png")

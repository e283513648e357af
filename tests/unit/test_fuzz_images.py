"""Seeded fuzzing of image files through the processors' entry that the pipelines, ``Trainer.predict`` and the
embedding writer use (``preprocess(path)``): a few hundred mutations of small PNG, JPEG, 16-bit PNG and palette
PNG files built here. Each gives a finite float32 ``(3, S, S)`` array or a DataError; a header claiming more
pixels than the budget is refused from the header (before decoding); time and peak memory stay bounded."""
import resource
import struct
import time
import warnings
import zlib
from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from mindram.errors import DataError
from mindram.models.clip.image_processing import CLIPImageProcessor
from mindram.models.ram.image_processing import RAMImageProcessor
from mindram.utils.image_files import DEFAULT_MAX_IMAGE_PIXELS, MAX_PIXELS_ENV

SEED = 7
SIZE = 16
MUTATIONS_PER_IMAGE = 100
HOSTILE_SIDES = (0, 1, 2, 3000, 13_000, 65_535, 200_000, 2**31 - 1)


def base_images():
    """``{name: bytes}``: small valid files of the formats users upload."""
    rng = np.random.default_rng(SEED)
    rgb = rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)
    out = {}
    for name, image, fmt in (("rgb.png", Image.fromarray(rgb), "PNG"),
                             ("rgb.jpg", Image.fromarray(rgb), "JPEG"),
                             ("grey16.png", Image.fromarray(rng.integers(0, 65536, (9, 12), dtype=np.uint16)), "PNG"),
                             ("palette.png", Image.fromarray(rgb).convert("P"), "PNG")):
        buffer = BytesIO()
        image.save(buffer, fmt, **({"transparency": 3} if name == "palette.png" else {}))
        out[name] = buffer.getvalue()
    return out


def with_size(data, width, height):
    """``data`` (PNG or baseline JPEG) whose header claims ``width x height``: PNG's IHDR (CRC kept valid) or the
    JPEG SOF0 segment (16-bit sides)."""
    if data.startswith(b"\x89PNG"):
        ihdr = data[12:16] + struct.pack(">II", width, height) + data[24:29]
        return data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]
    sof = data.find(b"\xff\xc0")
    return data[:sof + 5] + struct.pack(">HH", height % 65536, width % 65536) + data[sof + 9:]


def mutate(data, rng):
    """``(mutated bytes, claimed (width, height) or None)``."""
    data = bytearray(data)
    kind = rng.integers(6)
    if kind == 0:       # overwrite a few bytes
        for _ in range(int(rng.integers(1, 9))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
    elif kind == 1:     # cut short
        del data[int(rng.integers(len(data))):]
    elif kind == 2:     # insert random bytes
        at = int(rng.integers(len(data)))
        data[at:at] = bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
    elif kind == 3:     # drop a range
        at = int(rng.integers(len(data)))
        del data[at:at + int(rng.integers(1, 64))]
    elif kind == 4:     # repeat a slice
        at = int(rng.integers(len(data)))
        data[at:at] = data[at:at + int(rng.integers(1, 256))]
    else:               # a hostile size in the header
        width, height = (int(rng.choice(HOSTILE_SIDES)) for _ in range(2))
        if bytes(data[:4]) != b"\x89PNG":
            width, height = width % 65536, height % 65536
        return with_size(bytes(data), width, height), (width, height)
    return bytes(data), None


def check_result(out):
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (3, SIZE, SIZE)
    assert np.isfinite(out).all()


def test_mutated_images_give_pixels_or_a_data_error(tmp_path, monkeypatch):
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    processors = [CLIPImageProcessor(image_size=SIZE), CLIPImageProcessor(image_size=SIZE, resize_mode="longest"),
                  RAMImageProcessor(image_size=SIZE)]
    rng = np.random.default_rng(SEED)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    outcomes = {"ok": 0, "refused": 0, "over budget": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for name, data in base_images().items():
            for i in range(MUTATIONS_PER_IMAGE):
                mutated, claimed = mutate(data, rng)
                path = tmp_path / f"{i}_{name}"
                path.write_bytes(mutated)
                processor = processors[i % len(processors)]
                began = time.monotonic()
                try:
                    check_result(processor.preprocess(path))
                    outcomes["ok"] += 1
                except DataError as e:
                    message = str(e)
                    assert "\n" not in message and str(path) in message
                    outcomes["refused"] += 1
                    if claimed is not None and claimed[0] * claimed[1] > DEFAULT_MAX_IMAGE_PIXELS:
                        # refused from the header: by the budget, or by PIL's own header check
                        assert "megapixels" in message or "DecompressionBomb" in message, message
                        outcomes["over budget"] += 1
                assert time.monotonic() - began < 5.0, f"{path.name} took {time.monotonic() - began:.1f} s"
    elapsed = time.monotonic() - start
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024   # KiB on Linux
    assert elapsed < 20.0
    assert grown_mib < 500, f"peak memory grew by {grown_mib:.0f} MiB"
    assert min(outcomes.values()) > 0, outcomes    # the mutations reached every outcome


@pytest.mark.parametrize("side", [200_000, 13_000])
def test_header_claims_over_the_budget_are_refused_before_decoding(tmp_path, side):
    png = base_images()["grey16.png"]
    path = tmp_path / "claims.png"
    path.write_bytes(with_size(png, side, side if side == 13_000 else 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(DataError, match="megapixels, over the limit"):
            CLIPImageProcessor(image_size=224).preprocess(path)

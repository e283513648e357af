"""Unit tests of CLIPImageProcessor (no torch needed)."""
import ast
import pathlib

import numpy as np
import pytest
from PIL import Image

from mindram.errors import ConfigError, DataError
from mindram.models.clip import image_processing
from mindram.models.clip.image_processing import CLIPImageProcessor

S = 64


def _rgb(h=48, w=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.fixture
def proc():
    return CLIPImageProcessor(S)


def test_module_does_not_import_torch():
    tree = ast.parse(pathlib.Path(image_processing.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not names & {"torch", "torchvision", "open_clip"}


def test_single_and_batched_shapes(proc, tmp_path):
    arr = _rgb()
    path = tmp_path / "a.png"
    Image.fromarray(arr).save(path)
    single = proc(arr)
    assert single.shape == (1, 3, S, S) and single.dtype == np.float32
    one = proc.preprocess(Image.fromarray(arr))
    assert one.shape == (3, S, S) and one.dtype == np.float32
    batch = proc([arr, Image.fromarray(arr), str(path), path, (arr[:, :, 0])])
    assert batch.shape == (5, 3, S, S) and batch.dtype == np.float32
    for i in range(4):  # lossless inputs of the same pixels give identical results
        np.testing.assert_array_equal(batch[i], single[0])
    np.testing.assert_array_equal(proc((arr, arr)), np.stack([one, one]))


@pytest.mark.parametrize("shape", [(40, 50), (40, 50, 1), (40, 50, 2), (40, 50, 3), (40, 50, 4)])
def test_array_shapes(proc, shape):
    arr = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    out = proc(arr)
    assert out.shape == (1, 3, S, S)
    if len(shape) == 2 or shape[2] == 1:  # grayscale -> identical channels before normalisation
        x = out[0] * np.asarray(proc.std, np.float32)[:, None, None] + np.asarray(proc.mean, np.float32)[:, None, None]
        np.testing.assert_allclose(x[0], x[1], atol=1e-6)


def test_normalisation_of_constant_image():
    out = CLIPImageProcessor(S, mean=0.5, std=0.5)(np.full((30, 30, 3), 255, np.uint8))
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


def test_uint16_array_matches_uint8(proc):
    grad = np.tile(np.linspace(0, 65535, 120), (90, 1)).astype(np.uint16)
    as_u8 = np.clip(np.rint(grad / 257.0), 0, 255).astype(np.uint8)
    np.testing.assert_allclose(proc(grad), proc(as_u8), atol=1e-6)
    rgb16 = np.stack([grad, grad[::-1], np.full_like(grad, 30000)], axis=-1)
    rgb8 = np.clip(np.rint(rgb16 / 257.0), 0, 255).astype(np.uint8)
    np.testing.assert_allclose(proc(rgb16), proc(rgb8), atol=1e-6)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_high_bit_pil_modes_are_scaled_not_clipped(proc, mode, tmp_path):
    grad = np.tile(np.linspace(0, 65535, 120), (90, 1))
    as_u8 = np.clip(np.rint(grad / 257.0), 0, 255).astype(np.uint8)
    img = Image.fromarray(grad.astype(np.uint16)).convert("I")
    img = img if mode == "I" else Image.fromarray(grad.astype(np.uint16))
    if mode == "I;16B":
        img = Image.frombytes("I;16B", img.size, grad.astype(">u2").tobytes())
    assert img.mode == mode
    expected = proc(as_u8)
    np.testing.assert_allclose(proc(img), expected, atol=1e-6)
    if mode == "I;16":  # and via a 16-bit PNG file
        img.save(tmp_path / "g16.png")
        np.testing.assert_allclose(proc(tmp_path / "g16.png"), expected, atol=1e-6)


def test_float_pil_image_is_scaled_like_a_float_array(proc):
    f = np.random.default_rng(3).random((40, 50)).astype(np.float32)
    img = Image.fromarray(f)
    assert img.mode == "F"
    out = proc(img)
    np.testing.assert_array_equal(out, proc(f))
    np.testing.assert_array_equal(out, proc(np.rint(f.astype(np.float64) * 255).astype(np.uint8)))
    assert out.std() > 0.5  # not the all-black image of a 1/257 scale
    with pytest.raises(DataError, match=r"mode 'F'.*\[0, 1\].*got range \[0.0, 65535.0\]"):
        proc(Image.fromarray(np.linspace(0, 65535, 20, dtype=np.float32).reshape(4, 5)))
    with pytest.raises(DataError, match="got range"):
        proc(Image.fromarray(np.full((4, 4), np.nan, np.float32)))


@pytest.mark.parametrize("value", [-1, 65536])
def test_int32_pil_image_out_of_16bit_range_is_refused(proc, value):
    img = Image.fromarray(np.full((4, 5), value, np.int32))
    assert img.mode == "I"
    with pytest.raises(DataError, match=rf"mode 'I'.*\[0, 65535\].*got range \[{value}, {value}\]"):
        proc(img)


def test_float_and_bool_arrays(proc):
    f = np.random.default_rng(2).random((40, 50, 3))
    np.testing.assert_array_equal(proc(f), proc(np.rint(f * 255).astype(np.uint8)))
    np.testing.assert_array_equal(proc(f.astype(np.float32)), proc(np.rint(f * 255).astype(np.uint8)))
    b = f[:, :, 0] > 0.5
    np.testing.assert_array_equal(proc(b), proc(b.astype(np.uint8) * 255))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        proc(f * 255)
    with pytest.raises(DataError, match="int64"):
        proc(np.full((4, 4), 300, dtype=np.int64))


def test_resize_modes_shapes():
    arr = _rgb(30, 90)
    for mode in ("shortest", "longest", "squash"):
        assert CLIPImageProcessor(S, resize_mode=mode)(arr).shape == (1, 3, S, S)
    # longest pads with fill 0 (black): top/bottom rows of a wide image are padding
    longest = CLIPImageProcessor(S, resize_mode="longest", mean=0.0, std=1.0)
    out = longest.preprocess(np.full((30, 90, 3), 200, np.uint8))
    assert np.all(out[:, 0, :] == 0) and np.all(out[:, S // 2, :] > 0.7)


def _exif_jpeg(path, orientation=6):
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, :40] = (255, 0, 0)  # left half red, right half blue (landscape)
    arr[:, 40:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr).save(path, exif=exif, quality=95)


def test_exif_orientation(tmp_path):
    path = tmp_path / "rot.jpg"
    _exif_jpeg(path)
    with Image.open(path) as im:
        assert im.getexif().get(0x0112) == 6
        raw = np.asarray(im.convert("RGB"))
    default = CLIPImageProcessor(S)(path)
    np.testing.assert_array_equal(default, CLIPImageProcessor(S)(raw))  # default: EXIF ignored (reference)
    rotated = CLIPImageProcessor(S, apply_exif_orientation=True)(path)
    # orientation 6 = rotate 90 degrees clockwise for display: the red half ends up on top
    np.testing.assert_array_equal(rotated, CLIPImageProcessor(S)(np.rot90(raw, k=-1)))
    assert not np.array_equal(default, rotated)
    red = rotated[0, 0] > rotated[0, 2]
    assert red[: S // 4].all() and not red[-S // 4:].any()
    with Image.open(path) as im:  # also honoured for PIL inputs
        np.testing.assert_array_equal(CLIPImageProcessor(S, apply_exif_orientation=True)(im), rotated)


def test_alpha_background():
    # Reference behaviour (default): alpha is dropped by convert('RGB'). When the image is resized, PIL resizes
    # RGBA premultiplied, so fully transparent pixels come out black; when it is not resized the stored colour
    # under the transparent pixels shows.
    ours = CLIPImageProcessor(S, mean=0.0, std=1.0)
    for size, colour in ((40, [0.0, 0.0, 0.0]), (S, [1.0, 0.0, 0.0])):
        arr = np.zeros((size, size, 4), np.uint8)
        arr[..., 0] = 255  # fully transparent red
        np.testing.assert_allclose(ours(arr)[0][:, S // 2, S // 2], colour, atol=1e-6)
        white = CLIPImageProcessor(S, mean=0.0, std=1.0, alpha_background=(255, 255, 255))(arr)[0]
        np.testing.assert_allclose(white, 1.0, atol=1e-6)
    half = np.zeros((S, S, 2), np.uint8)  # LA: grey 100 at 50 % alpha over white -> 178 (rounded)
    half[..., 0], half[..., 1] = 100, 128
    out = CLIPImageProcessor(S, mean=0.0, std=1.0, alpha_background=(255, 255, 255))(half)[0]
    np.testing.assert_allclose(out, np.round((100 * 128 + 255 * 127) / 255) / 255, atol=1.5 / 255)


def test_missing_file(proc, tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        proc(missing)
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        proc([_rgb(), str(missing)])


def test_corrupt_file(proc, tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"this is not a jpeg" * 10)
    with pytest.raises(DataError, match="x.jpg") as info:
        proc(bad)
    assert info.value.__cause__ is not None and "UnidentifiedImageError" in str(info.value)
    truncated = tmp_path / "t.png"
    Image.fromarray(_rgb(200, 200)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(DataError, match="t.png"):
        proc(truncated)


@pytest.mark.parametrize("shape", [(3, 64, 64), (2, 8, 8, 3), (8,), (0, 5, 3), (8, 8, 5)])
def test_bad_array_shape(proc, shape):
    with pytest.raises(DataError, match=r"shape \(" + ", ".join(map(str, shape))) as info:
        proc(np.zeros(shape, np.uint8))
    assert "(H, W)" in str(info.value)


@pytest.mark.parametrize("bad", [5, 3.0, b"bytes", {"a": 1}, None])
def test_bad_type(proc, bad):
    with pytest.raises(TypeError, match=type(bad).__name__) as info:
        proc(bad)
    assert "PIL.Image.Image" in str(info.value) and "numpy.ndarray" in str(info.value)


def test_empty_list(proc):
    with pytest.raises(DataError, match="empty"):
        proc([])


def test_config_roundtrip_and_validation():
    p = CLIPImageProcessor(336, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear",
                           resize_mode="squash")
    d = p.to_dict()
    assert d["image_size"] == 336 and d["mean"] == [0.5] * 3 and d["resize_mode"] == "squash"
    q = CLIPImageProcessor.from_dict(d)
    assert q.to_dict() == d
    assert CLIPImageProcessor.from_dict({"image_size": 224}).to_dict() == CLIPImageProcessor().to_dict()
    with pytest.raises(ConfigError, match="bogus"):
        CLIPImageProcessor.from_dict({"bogus": 1})
    with pytest.raises(ConfigError, match="interpolation"):
        CLIPImageProcessor(interpolation="cubic")
    with pytest.raises(ConfigError, match="resize_mode"):
        CLIPImageProcessor(resize_mode="crop")
    with pytest.raises(ConfigError, match="image_size"):
        CLIPImageProcessor(image_size=0)
    assert "CLIPImageProcessor(image_size=336" in repr(p)

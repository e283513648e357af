"""Parity of CLIPImageProcessor with open_clip 3.3.0's eval transform on real photographs (skimage.data).

Needs torch + open_clip_torch + scikit-image (test extras); skipped without them.
"""
import numpy as np
import pytest

open_clip = pytest.importorskip("open_clip")
skdata = pytest.importorskip("skimage.data")
from PIL import Image  # noqa: E402

from mindram.models.clip.image_processing import CLIPImageProcessor  # noqa: E402

ATOL = 1e-5


def _photos():
    p = {n: Image.fromarray(getattr(skdata, n)()) for n in (
        "astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field", "logo", "horse", "text",
        "microaneurysms")}
    p["portrait"] = p["coffee"].transpose(Image.Transpose.TRANSPOSE)            # 400 x 600
    p["portrait_odd"] = p["chelsea"].crop((10, 0, 211, 300))                    # 201 x 300, odd width
    p["very_wide"] = p["rocket"].crop((0, 150, 640, 211))                       # 640 x 61
    p["very_tall"] = p["astronaut"].crop((200, 0, 227, 512))                    # 27 x 512
    p["small"] = p["chelsea"].resize((150, 100), Image.Resampling.BICUBIC)     # smaller than 224
    p["tiny"] = p["coffee"].resize((7, 5), Image.Resampling.BICUBIC)
    p["just_above"] = p["astronaut"].crop((0, 0, 225, 331))                     # crop offset rounding
    return p


PHOTOS = _photos()
MODE_SOURCES = ("coffee", "portrait", "very_wide", "small", "astronaut")


def _with_alpha(img: Image.Image) -> Image.Image:
    """RGBA with a horizontal alpha ramp 0..255 (fully transparent at the left edge)."""
    rgba = img.convert("RGBA")
    ramp = np.tile(np.linspace(0, 255, rgba.width).round().astype(np.uint8), (rgba.height, 1))
    rgba.putalpha(Image.fromarray(ramp))
    return rgba


def _variant(img: Image.Image, mode: str) -> Image.Image:
    rgb = img.convert("RGB")
    if mode == "P_adaptive":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    if mode == "P_quantize":
        return rgb.quantize(64)
    if mode in ("RGBA", "LA", "PA"):
        return _with_alpha(img).convert(mode) if mode != "RGBA" else _with_alpha(img)
    return rgb.convert(mode)


@pytest.fixture(scope="module")
def ref224():
    _, _, preprocess_val = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    return preprocess_val


def _check(ref, ours, img):
    expected = ref(img).numpy()
    got = ours.preprocess(img)
    assert got.dtype == np.float32 and got.shape == expected.shape
    diff = float(np.abs(got - expected).max())
    assert diff <= ATOL, f"max abs diff {diff} for mode {img.mode} size {img.size}"
    return diff


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_photos_vit_b32_eval_transform(ref224, name):
    _check(ref224, CLIPImageProcessor(224), PHOTOS[name])


@pytest.mark.parametrize("mode", ["L", "P_adaptive", "P_quantize", "RGBA", "LA", "PA", "CMYK", "YCbCr", "1"])
@pytest.mark.parametrize("name", MODE_SOURCES)
def test_pil_modes(ref224, name, mode):
    _check(ref224, CLIPImageProcessor(224), _variant(PHOTOS[name], mode))


@pytest.mark.parametrize("name", ["astronaut", "rocket", "portrait", "small", "camera", "logo", "horse"])
def test_size_336(name):
    _check(open_clip.image_transform(336, is_train=False), CLIPImageProcessor(336), PHOTOS[name])


@pytest.mark.parametrize("resize_mode", ["longest", "squash"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("name", ["coffee", "portrait_odd", "very_wide", "tiny", "camera"])
def test_resize_modes_and_interpolation(resize_mode, interpolation, name):
    ref = open_clip.image_transform(224, is_train=False, resize_mode=resize_mode, interpolation=interpolation)
    ours = CLIPImageProcessor(224, resize_mode=resize_mode, interpolation=interpolation)
    img = PHOTOS[name]
    _check(ref, ours, img)
    for mode in ("P_adaptive", "CMYK", "RGBA"):  # pads use each mode's own zero
        _check(ref, ours, _variant(img, mode))


def test_bilinear_shortest():
    ref = open_clip.image_transform(224, is_train=False, interpolation="bilinear")
    for name in ("coffee", "portrait", "small"):
        _check(ref, CLIPImageProcessor(224, interpolation="bilinear"), PHOTOS[name])


def test_imagenet_mean_std():
    from open_clip.constants import IMAGENET_MEAN, IMAGENET_STD
    ref = open_clip.image_transform(224, is_train=False, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    _check(ref, CLIPImageProcessor(224, mean=IMAGENET_MEAN, std=IMAGENET_STD), PHOTOS["chelsea"])


@pytest.mark.parametrize("name", ["astronaut", "portrait", "camera", "small"])
def test_numpy_and_file_inputs_match_pil(ref224, tmp_path, name):
    ours = CLIPImageProcessor(224)
    img = PHOTOS[name]
    expected = ref224(img).numpy()
    np.testing.assert_allclose(ours.preprocess(np.asarray(img)), expected, rtol=0, atol=ATOL)
    png = tmp_path / f"{name}.png"
    img.save(png)
    np.testing.assert_allclose(ours.preprocess(png), expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(ours.preprocess(str(png)), expected, rtol=0, atol=ATOL)
    jpg = tmp_path / f"{name}.jpg"
    img.save(jpg, quality=90)
    with Image.open(jpg) as decoded:  # JPEG is lossy: compare against the reference on the decoded file
        expected_jpg = ref224(decoded).numpy()
        from_array = ours.preprocess(np.asarray(decoded))
    np.testing.assert_allclose(ours.preprocess(jpg), expected_jpg, rtol=0, atol=ATOL)
    np.testing.assert_allclose(from_array, expected_jpg, rtol=0, atol=ATOL)


@pytest.mark.filterwarnings("ignore:Palette images with Transparency")
def test_saved_palette_png_with_transparency(ref224, tmp_path):
    path = tmp_path / "p.png"
    _with_alpha(PHOTOS["coffee"]).convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    with Image.open(path) as im:
        expected = ref224(im).numpy()
    np.testing.assert_allclose(CLIPImageProcessor()(path)[0], expected, rtol=0, atol=ATOL)


def test_batch_matches_reference(ref224):
    names = ["astronaut", "portrait", "camera", "horse"]
    batch = CLIPImageProcessor()([PHOTOS[n] for n in names])
    expected = np.stack([ref224(PHOTOS[n]).numpy() for n in names])
    assert batch.shape == (4, 3, 224, 224)
    np.testing.assert_allclose(batch, expected, rtol=0, atol=ATOL)

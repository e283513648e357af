"""RAMImageProcessor against recognize-anything's inference transform (``ram/transform.py``, docs/ram.md#preprocessing):
``convert('RGB')`` → torchvision ``Resize((S, S))`` (PIL bilinear) → ``ToTensor`` → ImageNet ``Normalize``,
on the repository's demo photos in several PIL modes."""
import numpy as np
import pytest
from PIL import Image
from torchvision.transforms import Compose, Normalize, Resize, ToTensor

from mindram.models.ram import RAMImageProcessor
from tests.conftest import ROOT

IMAGES = ROOT / "examples" / "images"  # copies of the reference repo's demo images


def reference_transform(size):
    """recognize-anything ram/transform.py get_transform(image_size=size), written out."""
    return Compose([lambda im: im.convert("RGB"), Resize((size, size)), ToTensor(),
                    Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])


def _variants():
    demo = Image.open(IMAGES / "demo4.jpg")
    demo.load()
    wide = Image.open(IMAGES / "openset_example.jpg")
    wide.load()
    rgba = demo.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, demo.width).astype(np.uint8), (demo.height, 1))))
    return {"rgb": demo, "wide": wide, "grey": demo.convert("L"), "palette": demo.convert("P"),
            "rgba": rgba, "cmyk": demo.convert("CMYK"), "bilevel": demo.convert("1"),
            "small": demo.resize((61, 47)), "tiny": demo.resize((3, 2))}


VARIANTS = _variants()


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("size", [384, 224])
def test_matches_the_reference_transform(name, size):
    image = VARIANTS[name]
    want = reference_transform(size)(image).numpy()
    got = RAMImageProcessor(image_size=size)(image)
    assert got.shape == (1, 3, size, size) and got.dtype == np.float32
    np.testing.assert_allclose(got[0], want, atol=1e-6, rtol=0)


def test_batch_and_paths():
    paths = [IMAGES / "demo4.jpg", str(IMAGES / "openset_example.jpg")]
    batch = RAMImageProcessor()(paths)
    want = np.stack([reference_transform(384)(Image.open(p)).numpy() for p in paths])
    np.testing.assert_allclose(batch, want, atol=1e-6, rtol=0)

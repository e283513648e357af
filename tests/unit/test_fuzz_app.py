"""Seeded fuzzing of what the web app parses from a visitor, without a browser (tests/st/test_app.py drives the
page): uploaded files through :func:`check_image` (mutated PNG/JPEG/16-bit/palette files, headers claiming
hostile sizes) and the text boxes (open-set tags, tag descriptions, candidate labels) as random strings. Each
input is accepted as it should be or refused with a DataError/ConfigError, in bounded time; an accepted upload
is one the processors then read (or refuse) with a DataError only."""
import time
import warnings

import numpy as np
import pytest

from mindram.app.service import check_image, parse_descriptions, parse_labels
from mindram.errors import ConfigError, DataError
from mindram.models.clip.image_processing import CLIPImageProcessor
from mindram.models.ram.tags import parse_tag_names
from mindram.utils.image_files import DEFAULT_MAX_IMAGE_PIXELS
from tests.unit.test_fuzz_images import base_images, mutate

SEED = 11
UPLOADS = 300
TEXTS = 400
SLOWEST_S = 3.0
ALPHABET = list("abc ,:;\n\t\r-_'\"\\/()[]{}#%") + ["狗", "猫", "\u200b", "\ufeff", "\x00", "\U0001f600", "é"]


@pytest.fixture(scope="module")
def processor():
    return CLIPImageProcessor(image_size=16)


def test_fuzzed_uploads_are_checked_or_refused(tmp_path, processor):
    rng = np.random.default_rng(SEED)
    bases = list(base_images().items())
    accepted = refused = 0
    for i in range(UPLOADS):
        name, data = bases[i % len(bases)]
        mutant, claimed = mutate(data, rng)
        path = tmp_path / f"{i}_{name}"
        path.write_bytes(mutant)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # PIL's DecompressionBombWarning before the refusal
            try:
                check_image(str(path))
            except DataError as e:
                assert "\n" not in str(e) and path.name in str(e)
                refused += 1
            else:
                if claimed is not None:
                    assert claimed[0] * claimed[1] <= DEFAULT_MAX_IMAGE_PIXELS, (path, claimed)
                try:   # what the tab does next: the pipeline reads it, or refuses it as one bad input
                    pixels = processor.preprocess(str(path))
                    assert pixels.shape == (3, 16, 16) and np.isfinite(pixels).all()
                except DataError:
                    pass
                accepted += 1
        assert time.perf_counter() - start < SLOWEST_S, path
    assert accepted and refused   # the mutations reach both outcomes


def random_text(rng):
    length = int(rng.choice([0, 1, 3, 20, 200, 5000]))
    return "".join(ALPHABET[j] for j in rng.integers(len(ALPHABET), size=length))


def test_fuzzed_text_boxes_parse_or_refuse():
    rng = np.random.default_rng(SEED)
    for _ in range(TEXTS):
        text = random_text(rng)
        start = time.perf_counter()
        try:
            names = parse_tag_names(text, "open-set tags")
            assert names and all(n.strip() for n in names) and len(set(names)) == len(names)
        except DataError:
            pass
        try:
            descriptions = parse_descriptions(text)
            assert descriptions is None or all(tag and values for tag, values in descriptions.items())
        except DataError as e:
            assert "\n" not in str(e)
        try:
            assert parse_labels(text) == text and text.strip()
        except ConfigError:
            assert not text.strip()
        assert time.perf_counter() - start < SLOWEST_S

"""What the web app does, without the web: check the inputs, run mindram's pipelines and the embedding index,
and shape their results for display. The page (``mindram.app.ui``) only lays out widgets around this.

Every call returns a result or raises a :class:`~mindram.errors.MindramError` (or ``ValueError``/``OSError``)
whose one-line message the page shows. Model calls are serialised by a lock: MindSpore's execution mode is
process-wide (see docs/global_state.md), and the web server calls from several threads.
"""
import collections
import logging
import os
import struct
import threading
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError, DataError
from ..models.ram.openset import DEFAULT_CLIP as DEFAULT_OPEN_SET_CLIP
from ..models.ram.tags import parse_tag_names
from ..pipeline import pipeline
from ..pipeline.feature_extraction import FeatureExtractionPipeline
from ..utils.image_files import DEFAULT_MAX_IMAGE_PIXELS, check_pixel_budget, max_image_pixels, read_image_size

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = DEFAULT_MAX_IMAGE_PIXELS   # the shared pixel budget: a 24-megapixel photo passes, 50 do not
DEFAULT_TEMPLATE = "a photo of a {}"
MAX_OPEN_SET_PIPELINES = 4          # open-set vocabularies kept built (their label embeddings)


def check_image(path, max_pixels=None):
    """``path`` if it is a regular file holding an image PIL can read with at most ``max_pixels`` pixels (None: the
    shared pixel budget, ``$MINDRAM_MAX_IMAGE_PIXELS`` or 25,000,000), else a ``DataError`` naming the file and
    the problem. Reads the header only: a huge image is refused before it is decoded, a FIFO without blocking."""
    if path is None:
        raise DataError("no image: upload or paste one first")
    name = Path(path).name
    try:
        width, height = read_image_size(path)
    except DataError as e:   # not a regular file: the message names the full path, the page shows the name
        raise DataError(str(e).replace(os.fspath(path), name)) from e
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError,
            struct.error) as e:   # PIL's header parsers raise any of these on a damaged file
        raise DataError(f"{name} is not an image this app can read ({type(e).__name__}); upload a JPEG, PNG, "
                        f"WebP, BMP, GIF or TIFF file") from e
    check_pixel_budget(width, height, name, max_pixels,
                       hint="downscale it first (or start the app with a larger --max_pixels)")
    return path


def parse_descriptions(text):
    """``{tag: [descriptions]}`` from lines ``tag: description`` (a tag may have several lines), or None when
    ``text`` is blank. ``DataError`` naming the line for a line without ``:``."""
    descriptions = collections.OrderedDict()
    for number, line in enumerate((text or "").splitlines(), 1):
        if not line.strip():
            continue
        tag, sep, description = line.partition(":")
        if not sep or not tag.strip() or not description.strip():
            raise DataError(f"descriptions line {number}: expected 'tag: description', got {line.strip()!r}")
        descriptions.setdefault(tag.strip(), []).append(description.strip())
    return dict(descriptions) or None


def parse_labels(text):
    """Candidate labels from a comma-separated string (the pipeline checks blanks and duplicates)."""
    if not (text or "").strip():
        raise ConfigError("no candidate labels: enter at least one label, e.g. 'a dog, a cat'")
    return text


class AppService:
    """The three features of the app on loaded models.

    Args:
        tagger: a RAM/RAM++ model instance, or None (the tagging tab says it is off).
        clip: a CLIP model instance, or None (zero-shot and search are off).
        store: an :class:`~mindram.app.store.ImageStore`, or None (search is off).
        open_set_clip: the CLIP (a name, path or instance) that embeds open-set tags; None: the tagging pipeline's
            default (``clip_vit_b_16``), loaded on the first open-set request.
        max_pixels: the largest image accepted (width x height); None: the shared pixel budget
            (``$MINDRAM_MAX_IMAGE_PIXELS`` or 25,000,000). The pipelines' image processors get the same budget.
        notice: Markdown shown at the top of the page (e.g. that the demo models are untrained).
        default_labels: the zero-shot tab's initial candidate labels.
    """

    def __init__(self, tagger=None, clip=None, store=None, open_set_clip=None, max_pixels=None,
                 notice="", default_labels="a dog, a cat, a car, a bird"):
        self.max_pixels, self.notice, self.default_labels = max_image_pixels(max_pixels), notice, default_labels
        budget = {"max_pixels": self.max_pixels}   # the processors refuse what check_image would
        self.store = store
        self._open_set_clip = DEFAULT_OPEN_SET_CLIP if open_set_clip is None else open_set_clip
        self._open_set_pipelines = collections.OrderedDict()
        self._lock = threading.Lock()
        self.tagger = pipeline("image_tagging", model=tagger, image_processor=budget) if tagger is not None else None
        self.classifier = (pipeline("zero_shot_image_classification", model=clip, image_processor=budget)
                           if clip is not None else None)
        self.features = pipeline("feature_extraction", model=clip, image_processor=budget) if clip is not None else None
        if store is not None:
            if self.features is None:
                raise ConfigError("--store needs a CLIP model (--clip) to embed the queries")
            width = self.features(texts=["a photo"]).shape[1]   # also compiles the text graph once
            store.check_width(width)

    # ---- tagging ----
    def _tagging_pipeline(self, open_set_tags, descriptions):
        if not (open_set_tags or "").strip():
            if descriptions:
                raise DataError("descriptions given without open-set tags: enter the tags they describe")
            return self.tagger
        names = parse_tag_names(open_set_tags, "open-set tags")
        unknown = [tag for tag in descriptions or {} if tag not in names]
        if unknown:
            raise DataError(f"descriptions for {unknown[:5]}, which are not among the open-set tags {names[:10]}")
        key = (tuple(names), repr(descriptions))
        if key not in self._open_set_pipelines:
            if isinstance(self._open_set_clip, (str, os.PathLike)):  # loaded once, not for every vocabulary
                self._open_set_clip = FeatureExtractionPipeline.load_model(self._open_set_clip)
            self._open_set_pipelines[key] = pipeline(
                "image_tagging", model=self.tagger.model, image_processor=self.tagger.image_processor,
                open_set_tags=names, open_set_descriptions=descriptions, open_set_clip_model=self._open_set_clip)
            while len(self._open_set_pipelines) > MAX_OPEN_SET_PIPELINES:
                self._open_set_pipelines.popitem(last=False)
        self._open_set_pipelines.move_to_end(key)
        return self._open_set_pipelines[key]

    def tag(self, image, threshold=None, open_set_tags="", descriptions_text=""):
        """Tags of one image: the ``image_tagging`` pipeline's list of ``{'label', 'label_cn', 'score',
        'class_id'}`` by score. ``threshold``: None (per-tag thresholds) or a number in [0, 1]."""
        if self.tagger is None:
            raise ConfigError("no tagger loaded: start the app with --tagger NAME_OR_PATH (or --demo)")
        check_image(image, self.max_pixels)
        descriptions = parse_descriptions(descriptions_text)
        with self._lock:
            tagger = self._tagging_pipeline(open_set_tags, descriptions)
            return tagger(image, threshold=threshold)[0]

    # ---- zero-shot ----
    def classify(self, image, labels_text, template=DEFAULT_TEMPLATE):
        """Zero-shot probabilities of the comma-separated labels, best first: ``[{'score', 'label'}, ...]``."""
        if self.classifier is None:
            raise ConfigError("no CLIP loaded: start the app with --clip NAME_OR_PATH (or --demo)")
        labels = parse_labels(labels_text)
        check_image(image, self.max_pixels)
        with self._lock:
            return self.classifier(image, candidate_labels=labels, hypothesis_template=template or DEFAULT_TEMPLATE)[0]

    # ---- search ----
    def search(self, query=None, image=None, k=8):
        """The ``k`` store images nearest to a text ``query`` or an ``image``: ``[{'rank', 'id', 'score',
        'path'}]`` (``path`` None when the image file is not found)."""
        if self.store is None:
            raise ConfigError("no embedding store: start the app with --store DIR (written by "
                              "scripts/export_embeddings.py or mindram.embeddings.write_embeddings), or --demo")
        if image is not None and (query or "").strip():
            raise DataError("give a text query or an image, not both (clear one of them)")
        if image is not None:
            check_image(image, self.max_pixels)
            with self._lock:
                vector = self.features(images=image)
        elif (query or "").strip():
            with self._lock:
                vector = self.features(texts=[query.strip()])
        else:
            raise DataError("nothing to search for: type a text query or upload an image")
        return self.store.search(vector, k)

"""``python -m mindram.app --demo``: the app on the embedded demos' tiny models, with no converted weights and
no download.

Models: the tiny CLIP of ``configs/clip/run_clip_demo_synthetic.yaml`` and the tiny RAM++ of
``configs/ram/run_ram_demo_synthetic.yaml``. When those demos have been trained (their ``<output_dir>/final``
exists, relative to the working directory as in the demos) the trained models are loaded; otherwise each is
built from its config with random weights (exactly the model its demo starts training from) and the page
says so and what to run. Open-set tags are embedded with the RAM demo's teacher CLIP (``tagging.teacher``:
random weights, the one the demo trains with; a real tagger uses CLIP ViT-B/16).

Search: a store of generated shapes (the CLIP demo's test images) and the repository's ``examples/images``
photos, written to ``./output/app_demo_store/images`` and embedded with the demo CLIP at every start (a few
seconds: the store always matches the CLIP in use).
"""
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..catalog import CONFIG_ROOT
from ..data import SyntheticCaptions
from ..embeddings import write_embeddings
from ..trainer import Trainer
from ..utils.io import atomic_write
from .store import ImageStore

logger = logging.getLogger(__name__)

CLIP_DEMO = CONFIG_ROOT / "clip" / "run_clip_demo_synthetic.yaml"
TAGGER_DEMO = CONFIG_ROOT / "ram" / "run_ram_demo_synthetic.yaml"
STORE_DIR = Path("output") / "app_demo_store"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"   # in a source checkout
NUM_STORE_SHAPES = 32


@dataclass
class DemoModels:
    """The demo's models, whether each is trained (its directory) or random, and the page's notice."""

    tagger: object
    clip: object
    open_set_clip: object
    trained: dict = field(default_factory=dict)   # {"clip"/"tagger": the final/ directory or None}
    class_names: list = field(default_factory=list)

    @property
    def notice(self):
        lines = ["**Demo mode**: tiny models of the embedded demos, which know only generated coloured shapes "
                 "(8 colours, 4 shapes, sizes and positions); expect noise on photos."]
        for key, config, minutes in (("clip", CLIP_DEMO, "3–5"), ("tagger", TAGGER_DEMO, "1")):
            where = self.trained.get(key)
            name = "CLIP" if key == "clip" else "RAM++ tagger"
            if where:
                lines.append(f"- {name}: trained, loaded from `{where}`.")
            else:
                lines.append(f"- {name}: **untrained (random weights)** — its results mean nothing. Train it "
                             f"(about {minutes} min on 2 CPU cores), then restart the app from the same folder: "
                             f"`python run_mindformer.py --config configs/{config.parent.name}/{config.name} "
                             f"--run_mode train`")
        lines.append("- Open-set tags are embedded by a random tiny CLIP (the RAM demo's teacher).")
        return "\n".join(lines)


def _demo_model(config_path):
    """``(model or final/ directory, trainer)`` of one demo config: its trained ``final/`` when present."""
    trainer = Trainer(args=str(config_path))
    final = Path(trainer.task.args.output_dir) / "final"
    if (final / "config.yaml").is_file():
        logger.info("demo: using the trained model in %s", final)
        return str(final), trainer
    logger.warning("demo: %s not trained yet (no %s); using its model with random weights", config_path.name, final)
    return trainer.model, trainer


def load_demo_models():
    """The demo's CLIP, tagger and open-set CLIP (see the module docstring)."""
    clip, _ = _demo_model(CLIP_DEMO)
    tagger, tagger_trainer = _demo_model(TAGGER_DEMO)
    trained = {key: model if isinstance(model, str) else None for key, model in (("clip", clip), ("tagger", tagger))}
    class_names = SyntheticCaptions(1).class_names
    return DemoModels(tagger=tagger, clip=clip, open_set_clip=tagger_trainer.task.teacher, trained=trained,
                      class_names=class_names)


def _slug(text):
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def write_store_images(folder, num_images=NUM_STORE_SHAPES):
    """Write the CLIP demo's first ``num_images`` test images as PNGs named after their captions; their paths."""
    source = SyntheticCaptions(num_images, image_size=64, split="test")
    paths = []
    for index in range(num_images):
        record = source[index]
        path = Path(folder) / f"shape_{index:03d}_{_slug(record.caption)}.png"
        with atomic_write(path) as tmp:
            Image.fromarray(record.image).save(tmp, format="PNG")
        paths.append(path.resolve())
    return paths


def copy_examples(folder):
    """Copy the repository's example photos (when present) into ``folder``; their paths there."""
    paths = []
    for example in sorted(EXAMPLES.glob("*.jpg")):
        path = Path(folder) / example.name
        with atomic_write(path) as tmp:
            shutil.copyfile(example, tmp)
        paths.append(path.resolve())
    return paths


def build_demo_store(clip_model, out_dir=STORE_DIR, num_images=NUM_STORE_SHAPES):
    """An :class:`ImageStore` of generated shapes and the example photos, embedded with ``clip_model``; image
    ids are the file names in ``out_dir/images``."""
    images = Path(out_dir) / "images"
    paths = write_store_images(images, num_images) + copy_examples(images)
    write_embeddings(clip_model, paths, Path(out_dir) / "vectors", kind="image", ids=[p.name for p in paths],
                     batch_size=16, overwrite=True, progress=False)
    return ImageStore(Path(out_dir) / "vectors", image_root=images)

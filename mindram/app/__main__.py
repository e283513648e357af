"""python -m mindram.app: the web app (tagging, zero-shot classification, search) in the browser.

    python -m mindram.app --demo                                   # tiny demo models, no weights, no download
    python -m mindram.app [--tagger NAME_OR_PATH] [--clip NAME_OR_PATH] [--store EMBEDDING_STORE]
                          [--image_root DIR] [--host 127.0.0.1] [--port 7860] [--share]

--tagger / --clip default to the pipelines' default models (ram_plus_swin_l_384, clip_vit_b_32; converted or
downloaded on first use like ``from_pretrained``); ``none`` turns a tab off. --store is the output folder of
``scripts/export_embeddings.py --images ... --out DIR`` (or an image export of ``write_embeddings``), embedded
with the same CLIP as --clip; relative image ids are found under --image_root (the folder given to --images).
The app listens on 127.0.0.1 (this machine only). --host 0.0.0.0 makes it reachable from the network and
--share creates a public https://*.gradio.live link through Gradio's tunnel servers: both are opt-in, and the
app has no authentication — anyone who reaches it can run the models.
Errors at start-up (a missing model or store, a store from another CLIP) are one line on stderr with exit code 2
(--debug shows the traceback).
"""
import argparse
import logging
import os
import sys

from ..errors import MindramError
from ..pipeline.defaults import DEFAULT_CLIP, DEFAULT_TAGGER
from ..utils.cli import add_debug_flag, configure_logging, run_cli
from ..utils.image_files import DEFAULT_MAX_IMAGE_PIXELS

logger = logging.getLogger("mindram.app")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def positive_int(text, upper=None):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0 or (upper is not None and value > upper):
        raise argparse.ArgumentTypeError(f"expected an int from 1 to {upper or 'any'}, got {text!r}")
    return value


def port_number(text):
    return positive_int(text, upper=65535)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mindram.app", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--demo", action="store_true",
                        help="the embedded demos' tiny models and a generated store (nothing downloaded)")
    parser.add_argument("--tagger", help=f"RAM/RAM++ name, directory or checkpoint, or none "
                                         f"(default {DEFAULT_TAGGER})")
    parser.add_argument("--clip", help=f"CLIP name, directory or checkpoint, or none "
                                       f"(default {DEFAULT_CLIP})")
    parser.add_argument("--open_set_clip", help="CLIP that embeds open-set tags (default: the tagging pipeline's, "
                                                "clip_vit_b_16)")
    parser.add_argument("--store", help="embedding store for the search tab (scripts/export_embeddings.py --out DIR)")
    parser.add_argument("--image_root", help="folder of the store's relative image ids (default: the working "
                                             "directory)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes the app to the network)")
    parser.add_argument("--port", type=port_number, default=7860)
    parser.add_argument("--share", action="store_true", help="also create a public Gradio share link (opt-in)")
    parser.add_argument("--max_pixels", type=positive_int, default=None,
                        help=f"largest image accepted, width x height (default $MINDRAM_MAX_IMAGE_PIXELS or "
                             f"{DEFAULT_MAX_IMAGE_PIXELS:,})")
    args = add_debug_flag(parser).parse_args(argv)
    if args.demo and (args.tagger or args.clip or args.store or args.open_set_clip):
        parser.error("--demo uses the demo's own models and store; leave out --tagger/--clip/--store/--open_set_clip")
    return args


def _off(value):
    return isinstance(value, str) and value.lower() == "none"


def build_service(args):
    """The :class:`AppService` of the command line (loads the models and the store)."""
    # pylint: disable=import-outside-toplevel  # MindSpore and the pipelines: once the arguments are good
    from ..pipeline.feature_extraction import FeatureExtractionPipeline
    from .service import AppService
    from .store import ImageStore
    if args.demo:
        from .demo import build_demo_store, load_demo_models   # pylint: disable=import-outside-toplevel
        models = load_demo_models()
        clip = FeatureExtractionPipeline.load_model(models.clip)
        return AppService(tagger=models.tagger, clip=clip, store=build_demo_store(clip),
                          open_set_clip=models.open_set_clip, max_pixels=args.max_pixels, notice=models.notice,
                          default_labels=", ".join(models.class_names[:8]))
    tagger = None if _off(args.tagger) else (args.tagger or DEFAULT_TAGGER)
    clip = None if _off(args.clip) else (args.clip or DEFAULT_CLIP)
    store = ImageStore(args.store, image_root=args.image_root) if args.store else None
    if clip is not None:
        clip = FeatureExtractionPipeline.load_model(clip)
    return AppService(tagger=tagger, clip=clip, store=store, open_set_clip=args.open_set_clip,
                      max_pixels=args.max_pixels)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # the app reports nothing to Gradio's servers
    try:
        from . import ui   # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise MindramError(f"python -m mindram.app needs gradio ({e}): pip install 'mindram[app]'") from e
    if args.host not in LOOPBACK:
        logger.warning("listening on %s: the app is reachable from the network and has no authentication", args.host)
    if args.share:
        logger.warning("--share: anyone with the public link can use the app")
    service = build_service(args)
    ui.launch(ui.build_ui(service), host=args.host, port=args.port, share=args.share)


if __name__ == "__main__":
    configure_logging()
    sys.exit(run_cli(main, prog="python -m mindram.app"))

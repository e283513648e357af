"""``python -m mindram.export --model NAME_OR_PATH --format mindir|onnx|both --output DIR [--towers image,text]
[--dynamic_batch] [--single_file]``: write deployable graphs and ``export.json`` (see :mod:`mindram.export`,
docs/deploy.md).

Errors are one line on stderr with exit code 2 (``--debug`` shows the traceback).
"""
import sys
from pathlib import Path

from .. import catalog
from ..download import FAMILIES
from ..errors import ConfigError
from ..utils.cli import OneLineErrorParser, add_debug_flag, run_quiet_cli

def build_parser():
    parser = OneLineErrorParser(prog="python -m mindram.export", description="Export a model to ONNX and/or MindIR")
    parser.add_argument("--model", required=True, help="model name, save_pretrained directory or .ckpt/.safetensors")
    parser.add_argument("--format", default=None, choices=("onnx", "mindir", "both"),
                        help="default: both for CLIP, mindir for RAM/RAM++ (their only format)")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--towers", default="image,text", help="CLIP: towers to export (image,text)")
    parser.add_argument("--dynamic_batch", action="store_true", help="a symbolic batch axis (default: fixed)")
    parser.add_argument("--batch_size", type=int, default=1, help="the fixed batch size without --dynamic_batch")
    parser.add_argument("--text_dtype", choices=("int64", "int32"), default="int64", help="CLIP token id dtype")
    parser.add_argument("--family", choices=FAMILIES, default=None, help="model family (default: detected)")
    parser.add_argument("--overwrite", action="store_true", help="replace an export already in --output")
    parser.add_argument("--single_file", action="store_true",
                        help="CLIP ONNX: each tower one .onnx file, weights inside (up to 2 GiB; default: a tower "
                             "over 32 MiB keeps them in <name>.onnx.data)")
    parser.add_argument("--verbose", action="store_true", help="log progress")
    return add_debug_flag(parser)


def detect_family(name_or_path):
    """The family of a catalog name, or of a checkpoint by the parameter names only its family has."""
    from ..models.modeling_utils import (  # pylint: disable=import-outside-toplevel
        checkpoint_names, directory_checkpoint)
    if not (catalog.looks_like_path(name_or_path) or Path(name_or_path).exists()):
        from ..download import resolve_any  # pylint: disable=import-outside-toplevel
        return resolve_any(name_or_path).family
    catalog.check_model_path(name_or_path)
    path = Path(name_or_path)
    if path.is_dir():
        path = directory_checkpoint(path, error=ConfigError)
    names = set(checkpoint_names(path))
    if "visual.conv1.weight" in names:
        return "clip"
    if "label_embed" in names:
        return "ram"
    raise ConfigError(f"{path}: neither a CLIP nor a RAM checkpoint; pass --family")


def load_model(name_or_path, family=None):
    """A model to export, loaded through the pipeline of its family (the same loading as inference)."""
    from ..pipeline import FeatureExtractionPipeline, ImageTaggingPipeline  # pylint: disable=import-outside-toplevel
    family = family or detect_family(name_or_path)
    loader = {"clip": FeatureExtractionPipeline, "ram": ImageTaggingPipeline}[family]
    return loader.load_model(name_or_path)


def _main(argv):
    args = build_parser().parse_args(argv)
    from . import export_model  # pylint: disable=import-outside-toplevel
    model = load_model(args.model, args.family)
    options = dict(formats=args.format or ("both" if model.family == "clip" else "mindir"), dynamic_batch=args.dynamic_batch, batch_size=args.batch_size,
                   model_name=args.model, overwrite=args.overwrite)
    if model.family == "clip":
        options.update(towers=args.towers, text_dtype=args.text_dtype, single_file=args.single_file)
    elif args.single_file:
        raise ConfigError(f"--single_file: a {model.family} export has no ONNX file (its format: MindIR)")
    manifest = export_model(model, args.output, **options)
    for name, graph in manifest["graphs"].items():
        for kind, record in graph["files"].items():
            print(f"{name} {kind}: {Path(args.output) / record['path']} ({record['bytes'] / 1e6:.1f} MB)")
    print(f"manifest: {Path(args.output) / 'export.json'}")
    return 0


def main(argv=None):
    """Command line; returns the exit code (0, or 2 with one line on stderr)."""
    return run_quiet_cli(_main, argv, prog="mindram.export")


if __name__ == "__main__":
    sys.exit(main())

"""``python -m mindram.extract_teacher_features``: run a tagging run's CLIP teacher once over its training set.

    python -m mindram.extract_teacher_features --config configs/ram/run_ram_plus_swin_l_384_finetune.yaml \\
        --output teacher_features/ [--batch_size 64] [--num_workers 2] [--overwrite] [--options KEY=VALUE ...]

Writes the store of :mod:`mindram.data.teacher_features` (image features of every readable record; for a RAM++
run with the alignment loss the normalised features of every caption; a manifest identifying the teacher and the
dataset) and prints the manifest's summary as JSON. Train from it with ``--options
tagging.teacher_features=teacher_features/``: the teacher is then never run (docs/ram.md#offline-teacher-features).
An interrupted run resumes when started again; unreadable images are skipped and listed (training substitutes
those records like unreadable images).

Exit codes: 0 written; 2 usage, config or data error (one line; ``--debug`` shows the traceback).
"""
import json
import sys

from .config import parse_options
from .utils.cli import OneLineErrorParser, add_debug_flag, configure_logging, run_cli
from .utils.validation import check_batch_size

PROG = "python -m mindram.extract_teacher_features"


def build_parser():
    parser = OneLineErrorParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="run config of the image_tagging task (its tagging.teacher "
                                                        "and train_dataset)")
    parser.add_argument("--output", required=True, help="the store directory (resumed if it holds an unfinished one)")
    parser.add_argument("--batch_size", type=int, default=64, help="images / captions per teacher call")
    parser.add_argument("--num_workers", type=int, default=0, help="threads decoding images")
    parser.add_argument("--overwrite", action="store_true", help="start again instead of resuming --output")
    parser.add_argument("--train_dataset_dir", default=None, help="train_dataset.data_loader.dataset_dir")
    parser.add_argument("--options", nargs="*", default=[], metavar="KEY=VALUE", help="dotted run-config overrides")
    return add_debug_flag(parser)


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_batch_size(args.batch_size, "--batch_size")
    overrides = parse_options(args.options)
    if args.train_dataset_dir:
        overrides["train_dataset.data_loader.dataset_dir"] = args.train_dataset_dir
    from .trainer.teacher_features import extract_teacher_features  # pylint: disable=import-outside-toplevel
    from .trainer.trainer import Trainer  # pylint: disable=import-outside-toplevel  # MindSpore
    trainer = Trainer(args=args.config, task="image_tagging", overrides=overrides)
    manifest = extract_teacher_features(trainer.task, args.output, batch_size=args.batch_size,
                                        overwrite=args.overwrite, num_workers=max(0, args.num_workers))
    print(json.dumps({"output": args.output, "teacher": manifest["teacher"]["name"],
                      "num_records": manifest["dataset"]["num_records"], **manifest["image"],
                      "num_caption_features": manifest.get("num_caption_features", 0)}, indent=2))
    return 0


if __name__ == "__main__":
    configure_logging()
    sys.exit(run_cli(main, prog=PROG))

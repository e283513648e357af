"""``python -m mindram.calibrate``: per-tag thresholds of a tagging model chosen on a labelled set.

    python -m mindram.calibrate --config configs/ram/run_ram_demo_synthetic.yaml \\
        --load_checkpoint output/ram_demo_synthetic/final [--eval_dataset_dir DIR] [--target f1|precision@0.9] \\
        [--output thresholds.txt] [--overwrite]

Reads the run config's ``eval_dataset`` (the labelled set), writes the threshold file (default
``<output_dir>/calibrated_thresholds.txt``; one value per tag of the set) and ``calibration_metrics.json``,
prints the report (JSON) and a line ``CF1 before -> after``. Evaluate or predict with the file:
``run_mindformer.py ... --options tagging.threshold_file=<file>`` (see :mod:`mindram.trainer.calibration`).

Exit codes: 0 written; 2 usage, config, data or checkpoint error (one line; ``--debug`` shows the traceback).
"""
import argparse
import json
import sys

from .config import parse_options
from .utils.cli import add_debug_flag, configure_logging, run_cli

PROG = "python -m mindram.calibrate"


def build_parser():
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="run config of the image_tagging task (default: the task's)")
    parser.add_argument("--load_checkpoint", default=None, help="model name, directory or checkpoint to calibrate")
    parser.add_argument("--eval_dataset_dir", default=None, help="the labelled set (eval_dataset.data_loader.dataset_dir)")
    parser.add_argument("--target", default="f1", help="f1 (per-tag best F1) or precision@P (most recall at P)")
    parser.add_argument("--output", default=None, help="threshold file (default: <output_dir>/calibrated_thresholds.txt)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing threshold file")
    parser.add_argument("--output_dir", default=None, help="where calibration_metrics.json (and the file) go")
    parser.add_argument("--options", nargs="*", default=[], metavar="KEY=VALUE", help="dotted run-config overrides")
    return add_debug_flag(parser)


def overrides_of(args):
    overrides = parse_options(args.options)
    flags = {"load_checkpoint": args.load_checkpoint, "output_dir": args.output_dir,
             "eval_dataset.data_loader.dataset_dir": args.eval_dataset_dir}
    overrides.update({k: v for k, v in flags.items() if v not in (None, "")})
    return overrides


def main(argv=None):
    args = build_parser().parse_args(argv)
    from .trainer.calibration import calibrate_task  # pylint: disable=import-outside-toplevel  # MindSpore
    from .trainer.trainer import Trainer  # pylint: disable=import-outside-toplevel
    trainer = Trainer(args=args.config, task="image_tagging", overrides=overrides_of(args))
    report = calibrate_task(trainer.task, target=args.target, output=args.output, overwrite=args.overwrite)
    print(json.dumps(report, indent=2, default=float))
    print(f"CF1 {report['before']['CF1']:.4f} -> {report['after']['CF1']:.4f} on {report['num_images']} images "
          f"({report['num_calibrated']} tags calibrated, {report['num_without_positives']} without positives kept "
          f"their threshold); thresholds in {report['threshold_file']}")
    return 0


if __name__ == "__main__":
    configure_logging()
    sys.exit(run_cli(main, prog=PROG))

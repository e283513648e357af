#!/usr/bin/env python
"""MindFormers-style entry point: run a task's train / eval / predict from a YAML run config.

    python run_mindformer.py --config configs/clip/run_clip_demo_synthetic.yaml --run_mode train
    python run_mindformer.py --config configs/clip/run_clip_vit_b_32_zero_shot_image_classification_cifar100.yaml \
        --run_mode eval --eval_dataset_dir ./cifar-100-python --load_checkpoint clip_vit_b_32
    python run_mindformer.py --config ... --run_mode predict --predict_data cat.jpg dog.jpg

Exit codes:
  0  success; predict: at least one input succeeded (an input that failed is printed in the JSON
     list as {"input": PATH, "error": WHY} in its place)
  1  the run failed: every predict input failed, or training stopped on a non-finite loss
     (checkpoints already written are intact)
  2  usage, config, data or checkpoint error, reported as one line on stderr (--debug shows the traceback)
"""
import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mindspore as ms  # noqa: E402

from mindram import Trainer  # noqa: E402
from mindram.config import MindFormerConfig, parse_scalar  # noqa: E402
from mindram.errors import ConfigError  # noqa: E402
from mindram.pipeline.base import ITEM_ERRORS  # noqa: E402
from mindram.trainer.run_config import RUN_MODES, check_run_mode  # noqa: E402
from mindram.utils.cli import EXIT_FAILED, add_debug_flag, configure_logging, one_line, run_cli  # noqa: E402

PROG = "run_mindformer.py"
DEVICE_TARGETS = ("CPU", "GPU", "Ascend")

logger = logging.getLogger("run_mindformer")


def build_parser():
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0],
                                     epilog=__doc__[__doc__.index("Exit codes:"):],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="run config YAML (configs/clip/run_*.yaml)")
    parser.add_argument("--run_mode", choices=RUN_MODES, default=None,
                        help="what to run (default: the config's run_mode, else train)")
    parser.add_argument("--train_dataset_dir", default=None, help="sets train_dataset.data_loader.dataset_dir")
    parser.add_argument("--eval_dataset_dir", default=None, help="sets eval_dataset.data_loader.dataset_dir")
    parser.add_argument("--predict_data", nargs="+", default=None, help="image path(s) for predict")
    parser.add_argument("--load_checkpoint", default=None, help="model name, directory or .ckpt to start from")
    parser.add_argument("--resume_training", default=None,
                        help="'latest' or a checkpoint directory to resume training exactly")
    parser.add_argument("--output_dir", default=None, help="where checkpoints, logs and metrics go")
    parser.add_argument("--overwrite_output_dir", action="store_true",
                        help="train into an output_dir that already holds another run's results "
                             "(sets runner_config.overwrite_output_dir)")
    parser.add_argument("--device_target", default="CPU", choices=DEVICE_TARGETS)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--top_k", type=int, default=None, help="predict: number of labels per image (>= 1)")
    parser.add_argument("--options", nargs="*", default=[], metavar="KEY=VALUE",
                        help="dotted overrides, e.g. runner_config.max_steps=100 optimizer.weight_decay=0.1")
    return add_debug_flag(parser)


def build_overrides(args):
    """Dotted config overrides from the command line: ``--options`` first, then the dedicated flags."""
    overrides = {}
    for item in args.options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--options {item!r}: expected KEY=VALUE, e.g. runner_config.max_steps=100")
        overrides[key] = parse_scalar(value)
    flags = {"load_checkpoint": args.load_checkpoint, "output_dir": args.output_dir, "seed": args.seed,
             "runner_config.resume_from_checkpoint": args.resume_training,
             "runner_config.overwrite_output_dir": args.overwrite_output_dir or None,
             "train_dataset.data_loader.dataset_dir": args.train_dataset_dir,
             "eval_dataset.data_loader.dataset_dir": args.eval_dataset_dir}
    overrides.update({key: value for key, value in flags.items() if value not in (None, "")})
    return overrides


def supported_device_targets():
    """Device targets this MindSpore build can run on (its device plugins that loaded at import)."""
    try:  # what mindspore.device_context.<target>.is_available() asks, without its warnings
        from mindspore._c_expression import MSContext
    except ImportError:  # another MindSpore layout: let set_context decide
        return list(DEVICE_TARGETS)
    context = MSContext.get_instance()
    return [target for target in DEVICE_TARGETS if context.is_pkg_support_device(target)]


def check_device_target(target):
    """ConfigError unless this MindSpore build supports ``target`` (set_context would abort in C++)."""
    supported = supported_device_targets()
    if target not in supported:
        raise ConfigError(f"--device_target {target}: this MindSpore build supports only {', '.join(supported)}; "
                          f"install MindSpore for {target} or pass --device_target {supported[0]}")


def failure_reason(processor, item):
    """Why a predict input gave no result: the error of preprocessing it again (failed inputs only)."""
    try:
        processor.preprocess(item)
    except ITEM_ERRORS as e:
        return one_line(e)
    return "the pipeline gave no result for this input"


def predict_entries(trainer, inputs, top_k):
    """``(entries, failed)``: one entry per input, its predictions or ``{"input": path, "error": why}``."""
    results = trainer.predict(list(inputs), top_k=top_k)
    entries, failed, processor = [], 0, None
    for item, result in zip(inputs, results):
        if result is None:
            processor = processor or trainer.task.image_processor()
            result = {"input": item, "error": failure_reason(processor, item)}
            failed += 1
        entries.append(result)
    return entries, failed


def run(trainer, config, mode, args):
    """Run ``mode``; returns ``(result to print, exit code)``."""
    if mode in ("train", "finetune"):
        result = trainer.train()
        result = {k: v for k, v in result.items() if k != "history"}
        if config.get("eval_dataset") is not None:
            result["eval"] = trainer.evaluate()
        return result, 0
    if mode == "eval":
        return trainer.evaluate(), 0
    entries, failed = predict_entries(trainer, args.predict_data, args.top_k)
    if failed == len(entries):
        return entries, EXIT_FAILED
    if failed:
        logger.warning("%d of %d predict inputs failed; their entries in the output name the error", failed,
                       len(entries))
    return entries, 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    overrides = build_overrides(args)
    check_device_target(args.device_target)
    config = MindFormerConfig(args.config)
    config.merge_from_dict(overrides)
    mode = check_run_mode(args.run_mode or config.get("run_mode") or "train",
                          key="--run_mode" if args.run_mode else f"{args.config}: run_mode")
    if mode == "predict" and not args.predict_data:
        raise ConfigError("--run_mode predict needs --predict_data IMAGE [IMAGE ...]")
    config.pop("run_mode", None)
    ms.set_context(device_target=args.device_target)
    trainer = Trainer(args=config)
    result, code = run(trainer, config, mode, args)
    print(json.dumps(result, indent=2, default=float, ensure_ascii=False))
    if code == EXIT_FAILED:
        print(f"{PROG}: error: none of the {len(result)} --predict_data inputs could be used "
              f"(their errors are in the printed JSON)", file=sys.stderr, flush=True)
        return code
    metrics = result.get("eval", result) if isinstance(result, dict) else {}
    if "zero_shot_top1" in metrics:
        ratio = metrics["zero_shot_top1"] / metrics["chance_top1"]
        print(f"zero-shot top-1 {100 * metrics['zero_shot_top1']:.1f}% on {metrics['num_images']} held-out images, "
              f"chance {100 * metrics['chance_top1']:.1f}% ({ratio:.1f}x chance)")
    return 0


if __name__ == "__main__":
    configure_logging()  # before run_cli routes the console handler through tqdm
    sys.exit(run_cli(main, prog=PROG))

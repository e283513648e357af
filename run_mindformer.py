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

# Only what parsing the arguments needs is imported here: --help and usage errors answer at once; MindSpore,
# the Trainer and the pipelines are imported by main() once the arguments are good.
from mindram.config import parse_options  # noqa: E402
from mindram.errors import ConfigError  # noqa: E402
from mindram.utils.jsonl_predictions import expand_inputs, predict_to_jsonl  # noqa: E402
from mindram.trainer.training_args import RUN_MODES  # noqa: E402
from mindram.utils.cli import (EXIT_FAILED, LOG_FORMAT, add_debug_flag, configure_logging, one_line,  # noqa: E402
                               run_cli)

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
    parser.add_argument("--predict_data", nargs="+", default=None,
                        help="image path(s), URL(s) or directories (searched recursively for images) for predict")
    parser.add_argument("--predict_output", default=None, metavar="FILE.jsonl",
                        help="predict: write one JSON line per image to this file, resumable (rerun the same command "
                             "after a kill); default <output_dir>/predictions.jsonl when --predict_data names a "
                             "directory")
    parser.add_argument("--load_checkpoint", default=None, help="model name, directory or .ckpt to start from")
    parser.add_argument("--resume_training", default=None,
                        help="'latest' or a checkpoint directory to resume training exactly")
    parser.add_argument("--output_dir", default=None, help="where checkpoints, logs and metrics go")
    parser.add_argument("--overwrite_output_dir", action="store_true",
                        help="train into an output_dir that already holds another run's results "
                             "(sets runner_config.overwrite_output_dir)")
    parser.add_argument("--device_target", default=None, choices=DEVICE_TARGETS,
                        help="device (default: the config's context.device_target, else CPU)")
    parser.add_argument("--device_id", type=int, default=None, help="device index (sets context.device_id)")
    parser.add_argument("--candidate_labels", nargs="+", default=None, metavar="LABEL",
                        help="predict (zero-shot): the class names to rank (sets predict.candidate_labels)")
    parser.add_argument("--use_parallel", type=parse_bool, default=None, metavar="{True,False}",
                        help="data-parallel run, one process per rank under msrun (scripts/run_distribute.sh); "
                             "sets use_parallel")
    parser.add_argument("--auto_trans_ckpt", type=parse_bool, default=None, metavar="{True,False}",
                        help="MindFormers' sharded-checkpoint transformation: not supported (checkpoints are never "
                             "sharded here); False is accepted")
    parser.add_argument("--src_strategy_path_or_dir", default=None,
                        help="MindFormers' sharding strategy: not supported (checkpoints are never sharded here)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--top_k", type=int, default=None, help="predict: number of labels per image (>= 1)")
    parser.add_argument("--output_format", choices=["list", "paddleclas"], default=None,
                        help="predict (image_tagging): 'paddleclas' prints PaddleClas' {class_ids, scores, "
                             "label_names} (default: the config's tagging.output_format, else list)")
    parser.add_argument("--language", choices=["en", "cn"], default=None,
                        help="predict (image_tagging, --output_format paddleclas): label_names in Chinese (cn, "
                             "PaddleClas' default) or English (en)")
    parser.add_argument("--options", nargs="*", default=[], metavar="KEY=VALUE",
                        help="dotted overrides, e.g. runner_config.max_steps=100 optimizer.weight_decay=0.1")
    return add_debug_flag(parser)


def build_overrides(args):
    """Dotted config overrides from the command line: ``--options`` first, then the dedicated flags."""
    overrides = parse_options(args.options)
    flags = {"load_checkpoint": args.load_checkpoint, "output_dir": args.output_dir, "seed": args.seed,
             "use_parallel": args.use_parallel, "runner_config.resume_from_checkpoint": args.resume_training,
             "runner_config.overwrite_output_dir": args.overwrite_output_dir or None,
             "train_dataset.data_loader.dataset_dir": args.train_dataset_dir,
             "context.device_target": args.device_target, "context.device_id": args.device_id,
             "predict.candidate_labels": args.candidate_labels, "auto_trans_ckpt": args.auto_trans_ckpt,
             "src_strategy_path_or_dir": args.src_strategy_path_or_dir,
             "eval_dataset.data_loader.dataset_dir": args.eval_dataset_dir}
    overrides.update({key: value for key, value in flags.items() if value not in (None, "")})
    return overrides


def parse_bool(text):
    """MindFormers' boolean flags: True/False (also true/false, 1/0)."""
    value = {"true": True, "1": True, "false": False, "0": False}.get(str(text).lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")
    return value


def tag_logs_with_rank(rank):
    """Prefix every console log line with ``rank N`` (each rank of a data-parallel job logs, errors included)."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT.replace("%(name)s", f"rank {rank} %(name)s")))


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
        raise ConfigError(f"device_target {target} (--device_target or the config's context.device_target): this "
                          f"MindSpore build supports only {', '.join(supported)}; install MindSpore for {target} or "
                          f"pass --device_target {supported[0]}")


def failure_reason(processor, item):
    """Why a predict input gave no result: the error of preprocessing it again (failed inputs only)."""
    from mindram.pipeline.base import ITEM_ERRORS  # pylint: disable=import-outside-toplevel
    try:
        processor.preprocess(item)
    except ITEM_ERRORS as e:
        return one_line(e)
    return "the pipeline gave no result for this input"


def predict_options(trainer, args):
    """``--output_format``/``--language`` as predict options (image_tagging only: ConfigError for another task)."""
    options = {k: v for k, v in (("output_format", args.output_format), ("language", args.language)) if v}
    if options and trainer.task.name != "image_tagging":
        raise ConfigError(f"--{'/--'.join(options)}: only the image_tagging task has these output options "
                          f"(this config runs {trainer.task.name})")
    return options


def predict_entries(trainer, inputs, top_k, options=None):
    """``(entries, failed)``: one entry per input, its predictions or ``{"input": path, "error": why}``; with
    ``output_format`` paddleclas, PaddleClas' dict (a failed input is None in it, its reason logged)."""
    results = trainer.predict(list(inputs), top_k=top_k, **(options or {}))
    if isinstance(results, dict):
        failed = [item for item, ids in zip(inputs, results["class_ids"]) if ids is None]
        for item in failed:
            logger.warning("predict input %s failed: %s", item, failure_reason(trainer.task.image_processor(), item))
        return results, len(failed)
    entries, failed, processor = [], 0, None
    for item, result in zip(inputs, results):
        if result is None:
            processor = processor or trainer.task.image_processor()
            result = {"input": item, "error": failure_reason(processor, item)}
            failed += 1
        entries.append(result)
    return entries, failed


def prediction_lines(trainer, items, top_k, options):
    """One JSON-lines record per input: ``{"input", "predictions"}`` (PaddleClas format: its keys), or
    ``{"input", "error"}`` for an input that could not be used."""
    entries, _ = predict_entries(trainer, items, top_k, options)
    if isinstance(entries, dict):  # PaddleClas' format: one list per key, None for a failed input
        rows = [{key: values[i] for key, values in entries.items()} for i in range(len(items))]
        processor = trainer.task.image_processor()
        return [{"input": item, **row} if row.get("class_ids") is not None else
                {"input": item, "error": failure_reason(processor, item)} for item, row in zip(items, rows)]
    return [dict(entry) if isinstance(entry, dict) and "error" in entry else {"input": item, "predictions": entry}
            for item, entry in zip(items, entries)]


def unconfigured_eval(config):
    """Why the evaluation after training is skipped (None: it runs): no ``eval_dataset``, or its data loader
    reads a directory that is not set (MindFormers' pretrain configs ship ``dataset_dir: ""``)."""
    section = config.get("eval_dataset")
    if section is None or section.get("data_loader") is None:
        return "the run config has no eval_dataset"
    loader = section["data_loader"]
    if "dataset_dir" in loader and loader.get("dataset_dir") in (None, ""):
        return "eval_dataset.data_loader.dataset_dir is empty (pass --eval_dataset_dir DIR to evaluate after training)"
    return None


def apply_context(config):
    """Apply the run config's ``context`` section (MindFormers: ``mode``, ``device_target``, ``device_id``),
    after the command-line flags were merged into it; ConfigError for a value MindSpore cannot take."""
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    context = dict(config.get("context") or {})
    target = context.get("device_target") or "CPU"
    check_device_target(target)
    settings = {"device_target": target}
    if context.get("mode") is not None:
        settings["mode"] = context_mode(context["mode"])
    if context.get("device_id") is not None:
        device_id = context["device_id"]
        if isinstance(device_id, bool) or not isinstance(device_id, int) or device_id < 0:
            raise ConfigError(f"context.device_id: expected a device index >= 0, got {device_id!r}")
        settings["device_id"] = device_id
    ms.set_context(**settings)
    return settings


def context_mode(mode):
    """``context.mode`` as MindSpore's int: 0/GRAPH_MODE or 1/PYNATIVE_MODE."""
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    names = {"GRAPH_MODE": ms.GRAPH_MODE, "PYNATIVE_MODE": ms.PYNATIVE_MODE}
    if mode in (ms.GRAPH_MODE, ms.PYNATIVE_MODE) and not isinstance(mode, bool):
        return mode
    if isinstance(mode, str) and mode.upper() in names:
        return names[mode.upper()]
    raise ConfigError(f"context.mode: expected 0 (GRAPH_MODE) or 1 (PYNATIVE_MODE), got {mode!r}")


def run(trainer, config, mode, args):
    """Run ``mode``; returns ``(result to print, exit code)``."""
    if mode in ("train", "finetune"):
        result = trainer.train()
        result = {k: v for k, v in result.items() if k != "history"}
        skipped = unconfigured_eval(config)
        if skipped is None:
            result["eval"] = trainer.evaluate()
        else:
            logger.info("evaluation after training skipped: %s", skipped)
            result["eval_skipped"] = skipped
        return result, 0
    if mode == "eval":
        return trainer.evaluate(), 0
    options = predict_options(trainer, args)
    inputs = expand_inputs(args.predict_data)
    output = args.predict_output
    if output is None and any(Path(str(item)).is_dir() for item in args.predict_data):
        output = trainer.task.output_dir / "predictions.jsonl"
    if output is not None:
        summary = predict_to_jsonl(lambda chunk: prediction_lines(trainer, chunk, args.top_k, options), inputs, output,
                                   chunk_size=max(1, trainer.task.args.eval_batch_size or trainer.task.args.batch_size))
        all_failed = summary["num_written"] > 0 and summary["num_failed"] == summary["num_written"]
        return summary, EXIT_FAILED if all_failed else 0
    entries, failed = predict_entries(trainer, inputs, args.top_k, options)
    if failed == len(args.predict_data):
        return entries, EXIT_FAILED
    if failed:
        logger.warning("%d of %d predict inputs failed; their entries in the output name the error", failed,
                       len(args.predict_data))
    return entries, 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    overrides = build_overrides(args)
    from mindram import Trainer  # pylint: disable=import-outside-toplevel
    from mindram.trainer.run_config import check_run_mode, load_run_config  # pylint: disable=import-outside-toplevel
    # a PaddleClas RAM YAML is translated (mindram.compat.paddleclas); sections are checked after the overrides
    config = load_run_config(args.config, overrides)
    mode = check_run_mode(args.run_mode or config.get("run_mode") or "train",
                          key="--run_mode" if args.run_mode else f"{args.config}: run_mode")
    if mode == "predict" and not args.predict_data:
        raise ConfigError("--run_mode predict needs --predict_data IMAGE [IMAGE ...]")
    config.pop("run_mode", None)
    apply_context(config)
    trainer = Trainer(args=config)
    if trainer.task.parallel.distributed:
        tag_logs_with_rank(trainer.task.parallel.rank)
    result, code = run(trainer, config, mode, args)
    if trainer.task.parallel.distributed and trainer.task.parallel.rank != 0:
        return code   # one job, one result: rank 0 prints it (every rank logs to its own file)
    print(json.dumps(result, indent=2, default=float, ensure_ascii=False))
    if code == EXIT_FAILED:
        streamed = isinstance(result, dict) and "output" in result
        count = result["num_written"] if streamed else len(args.predict_data)
        print(f"{PROG}: error: none of the {count} --predict_data inputs could be used (their errors are in "
              f"{result['output'] if streamed else 'the printed JSON'})", file=sys.stderr, flush=True)
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

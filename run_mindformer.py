#!/usr/bin/env python
"""MindFormers-style entry point: run a task's train / eval / predict from a YAML run config.

    python run_mindformer.py --config configs/clip/run_clip_demo_synthetic.yaml --run_mode train
    python run_mindformer.py --config configs/clip/run_clip_vit_b_32_zero_shot_image_classification_cifar100.yaml \
        --run_mode eval --eval_dataset_dir ./cifar-100-python --load_checkpoint clip_vit_b_32
    python run_mindformer.py --config ... --run_mode predict --predict_data cat.jpg dog.jpg
"""
import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def parse_value(text):
    """YAML scalar parsing for ``--options key=value`` (numbers, bools, null, lists)."""
    import yaml
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def build_parser():
    parser = argparse.ArgumentParser(description="Run a mindram task from a run config (MindFormers flags)")
    parser.add_argument("--config", required=True, help="run config YAML (configs/clip/run_*.yaml)")
    parser.add_argument("--run_mode", choices=["train", "eval", "predict", "finetune"], default=None,
                        help="what to run (default: the config's run_mode, else train)")
    parser.add_argument("--train_dataset_dir", default=None, help="sets train_dataset.data_loader.dataset_dir")
    parser.add_argument("--eval_dataset_dir", default=None, help="sets eval_dataset.data_loader.dataset_dir")
    parser.add_argument("--predict_data", nargs="+", default=None, help="image path(s) for predict")
    parser.add_argument("--load_checkpoint", default=None, help="model name, directory or .ckpt to start from")
    parser.add_argument("--resume_training", default=None,
                        help="'latest' or a checkpoint directory to resume training exactly")
    parser.add_argument("--output_dir", default=None, help="where checkpoints, logs and metrics go")
    parser.add_argument("--device_target", default="CPU", choices=["CPU", "GPU", "Ascend"])
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--top_k", type=int, default=None, help="predict: number of labels per image")
    parser.add_argument("--options", nargs="*", default=[], metavar="KEY=VALUE",
                        help="dotted overrides, e.g. runner_config.max_steps=100 optimizer.weight_decay=0.1")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import mindspore as ms

    from mindram import Trainer
    from mindram.config import MindFormerConfig
    from mindram.errors import ConfigError

    overrides = {}
    for item in args.options:
        if "=" not in item:
            raise SystemExit(f"--options expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key] = parse_value(value)
    if args.load_checkpoint:
        overrides["load_checkpoint"] = args.load_checkpoint
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.resume_training:
        overrides["runner_config.resume_from_checkpoint"] = args.resume_training
    for section, value in (("train_dataset", args.train_dataset_dir), ("eval_dataset", args.eval_dataset_dir)):
        if value:
            overrides[f"{section}.data_loader.dataset_dir"] = value
    config = MindFormerConfig(args.config)
    config.merge_from_dict(overrides)
    mode = args.run_mode or config.get("run_mode") or "train"
    config.pop("run_mode", None)
    ms.set_context(device_target=args.device_target)
    try:
        trainer = Trainer(args=config)
        if mode in ("train", "finetune"):
            result = trainer.train()
            result = {k: v for k, v in result.items() if k != "history"}
            if config.get("eval_dataset") is not None:
                result["eval"] = trainer.evaluate()
        elif mode == "eval":
            result = trainer.evaluate()
        else:
            if not args.predict_data:
                raise ConfigError("--run_mode predict needs --predict_data IMAGE [IMAGE ...]")
            result = trainer.predict(args.predict_data, top_k=args.top_k)
    except (ConfigError, KeyError, FileNotFoundError) as e:
        logging.getLogger("run_mindformer").error("%s", e)
        return 2
    print(json.dumps(result, indent=2, default=float, ensure_ascii=False))
    metrics = result.get("eval", result) if isinstance(result, dict) else {}
    if "zero_shot_top1" in metrics:
        ratio = metrics["zero_shot_top1"] / metrics["chance_top1"]
        print(f"zero-shot top-1 {100 * metrics['zero_shot_top1']:.1f}% on {metrics['num_images']} held-out images, "
              f"chance {100 * metrics['chance_top1']:.1f}% ({ratio:.1f}x chance)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

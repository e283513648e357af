#!/usr/bin/env python
"""Trainer-API example: contrastive pretraining, then evaluation (retrieval recall@K, zero-shot top-1).

    python scripts/example_pretrain.py                                  # synthetic data, no download
    python scripts/example_pretrain.py --config configs/clip/run_clip_vit_b_32_pretrain_flickr8k.yaml \
        --train_dataset ./Flickr8k --eval_dataset ./Flickr8k

Errors (config, data, checkpoint, a non-finite loss) are one line on stderr with exit code 2; --debug shows
the traceback.
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mindram import Trainer  # noqa: E402
from mindram.utils.cli import add_debug_flag, configure_logging, run_cli  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs/clip/run_clip_demo_synthetic.yaml"))
    parser.add_argument("--train_dataset", default=None, help="dataset directory for the config's data_loader")
    parser.add_argument("--eval_dataset", default=None)
    parser.add_argument("--max_steps", type=int, default=None)
    args = add_debug_flag(parser).parse_args(argv)
    overrides = {"runner_config.max_steps": args.max_steps} if args.max_steps else None
    trainer = Trainer(args=args.config, train_dataset=args.train_dataset, eval_dataset=args.eval_dataset,
                      overrides=overrides)
    summary = trainer.train()
    metrics = trainer.evaluate()
    print(json.dumps({"final_loss": summary["final_loss"], "eval": metrics}, indent=2))


if __name__ == "__main__":
    configure_logging()
    sys.exit(run_cli(main, prog="example_pretrain.py"))

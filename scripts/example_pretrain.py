#!/usr/bin/env python
"""Trainer-API example: contrastive pretraining, then evaluation (retrieval recall@K, zero-shot top-1).

    python scripts/example_pretrain.py                                  # synthetic data, no download
    python scripts/example_pretrain.py --config configs/clip/run_clip_vit_b_32_pretrain_flickr8k.yaml \
        --train_dataset ./Flickr8k --eval_dataset ./Flickr8k
"""
import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mindram import Trainer  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs/clip/run_clip_demo_synthetic.yaml"))
    parser.add_argument("--train_dataset", default=None, help="dataset directory for the config's data_loader")
    parser.add_argument("--eval_dataset", default=None)
    parser.add_argument("--max_steps", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = {"runner_config.max_steps": args.max_steps} if args.max_steps else None
    trainer = Trainer(args=args.config, train_dataset=args.train_dataset, eval_dataset=args.eval_dataset,
                      overrides=overrides)
    summary = trainer.train()
    metrics = trainer.evaluate()
    print(json.dumps({"final_loss": summary["final_loss"], "eval": metrics}, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Trainer-API and pipeline() examples for zero-shot image classification.

    # evaluate a converted model on CIFAR-100 (18 OpenAI templates, class names from the dataset)
    python scripts/example_zero_shot.py --model clip_vit_b_32 --cifar100 ./cifar-100-python
    # classify images against your own labels
    python scripts/example_zero_shot.py --model clip_vit_b_32 --images cat.jpg dog.jpg --labels cat dog car

Errors (config, data, checkpoint, unreadable files) are one line on stderr with exit code 2; --debug shows
the traceback. An image that cannot be read is reported (with the reason in a warning) and the others are
classified.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mindram import Trainer, pipeline  # noqa: E402
from mindram.utils.cli import add_debug_flag, configure_logging, run_cli  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model name, save_pretrained directory or .ckpt")
    parser.add_argument("--cifar100", default=None, help="cifar-100-python directory to evaluate on")
    parser.add_argument("--images", nargs="*", default=[])
    parser.add_argument("--labels", nargs="*", default=[])
    parser.add_argument("--template", default="a photo of a {}.")
    args = add_debug_flag(parser).parse_args(argv)
    if args.cifar100:
        trainer = Trainer(task="zero_shot_image_classification", model=args.model, eval_dataset=args.cifar100)
        print(json.dumps(trainer.evaluate(), indent=2))
    if args.images:
        classifier = pipeline("zero_shot_image_classification", model=args.model, candidate_labels=args.labels,
                              hypothesis_template=args.template)
        for path, ranking in zip(args.images, classifier(args.images, top_k=3)):
            print(path, ranking if ranking is not None else "could not be read (see the warning above)")


if __name__ == "__main__":
    configure_logging()
    sys.exit(run_cli(main, prog="example_zero_shot.py"))

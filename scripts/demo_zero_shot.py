#!/usr/bin/env python
"""Zero-shot classification demo with a *randomly initialised* CLIP ViT-B/32 (no download).

Pretrained weights cannot be downloaded here, so this demo exercises the whole path a user takes
with real weights: weights in open_clip's file layout (safetensors) → convert_weights converter →
CLIPModel.from_pretrained → image processor + tokenizer → zero-shot scores. With random weights the
scores are meaningless; with converted OpenAI/open_clip weights they are CLIP's.
Errors (a missing or unreadable --image, a config or checkpoint error) are one line on stderr with exit code 2;
--debug shows the traceback.
"""
import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mindram  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402
from mindram.models.clip.convert import convert_file, to_open_clip_state_dict  # noqa: E402
from mindram.utils.cli import add_debug_flag, configure_logging, run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=str(ROOT / "examples" / "images" / "demo4.jpg"))
    parser.add_argument("--labels", nargs="+", default=["a dog", "a cat", "a person", "a car", "a tree"])
    parser.add_argument("--model", default="clip_vit_b_32")
    args = add_debug_flag(parser).parse_args(argv)

    config = mindram.CLIPConfig.from_pretrained(args.model)
    pixels = mindram.CLIPImageProcessor(image_size=config.vision_config.image_size)(args.image)  # fails fast
    print("=" * 72 + "\nDEMO WITH RANDOM WEIGHTS - scores are meaningless, the pipeline is real\n" + "=" * 72)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        random_model = mindram.CLIPModel(config)
        source = Path(tmp) / "open_clip_model.safetensors"
        save_file(to_open_clip_state_dict(random_model.state_dict()), str(source))
        report = convert_file(source, Path(tmp) / f"{args.model}.ckpt", model_name=args.model)
        model = mindram.CLIPModel.from_pretrained(report["mindspore_path"])
        print(f"converted random {report['architecture']} ({report['parameters']} tensors) "
              f"in {time.time() - start:.1f}s")

    start = time.time()
    image = model.get_image_features(pixels).asnumpy()
    text = model.get_text_features(mindram.tokenize([f"a photo of {label}" for label in args.labels])).asnumpy()
    image /= np.linalg.norm(image, axis=-1, keepdims=True)
    text /= np.linalg.norm(text, axis=-1, keepdims=True)
    logits = 100.0 * image @ text.T
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    print(f"image {args.image}: encoded image + {len(args.labels)} prompts in {time.time() - start:.1f}s")
    for index in np.argsort(-probs[0]):
        print(f"  {probs[0, index]:.4f}  {args.labels[index]}")


if __name__ == "__main__":
    configure_logging(logging.WARNING)
    sys.exit(run_cli(main, prog="demo_zero_shot.py"))

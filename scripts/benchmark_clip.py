#!/usr/bin/env python
"""Throughput of mindram vs open_clip (torch CPU) for CLIP image and text towers, one run, same weights.

    python scripts/benchmark_clip.py [--model ViT-B-32] [--batch_sizes 1 32] [--repeats 5]

Prints images/s and texts/s for both and the ratio mindram ÷ torch (> 1 means mindram is faster),
plus the max-abs-diff of the features so the speed is measured on numerically equal computations.
The torch side needs the test extra (torch, open_clip_torch).
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_timing import timed  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mindram  # noqa: E402
from mindram.models.clip.convert import config_from_state_dict, convert_state_dict, matching_architectures  # noqa: E402
from mindram.utils.cli import add_debug_flag, configure_logging, run_cli  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture name")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=5)
    args = add_debug_flag(parser).parse_args(argv)

    import open_clip
    import torch
    torch.manual_seed(0)
    ref = open_clip.create_model(args.model, pretrained=None).eval()
    params = convert_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    act = "quick_gelu" if "quickgelu" in args.model else "gelu"
    config = config_from_state_dict(params, hidden_act=act)
    arch = f"{(matching_architectures(params) or ['custom'])[0]}, {act}"
    model = mindram.CLIPModel(config)
    model.load_weights(params)
    model.set_train(False)
    size = model.image_size
    print(f"model {args.model} (mindram {arch}), torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    print(f"{'tower':<6} {'batch':>5} {'torch/s':>9} {'mindram/s':>10} {'ratio':>6} {'max|diff|':>10}")
    rng = np.random.default_rng(0)
    texts = ["a photo of a number %d on a %s background" % (i, c) for i, c in
             zip(range(64), ["red", "green", "blue", "white"] * 16)]
    for batch in args.batch_sizes:
        pixels = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
        ids = mindram.tokenize(texts[:batch] if batch <= len(texts) else texts * (batch // len(texts) + 1))[:batch]
        tp, ti = torch.from_numpy(pixels), torch.from_numpy(ids).long()
        for tower, torch_fn, ms_fn in [
            ("image", lambda: ref.encode_image(tp), lambda: model.get_image_features(pixels).asnumpy()),
            ("text", lambda: ref.encode_text(ti), lambda: model.get_text_features(ids).asnumpy()),
        ]:
            with torch.no_grad():
                t_torch = timed(torch_fn, args.repeats)
                diff = np.abs(torch_fn().numpy() - ms_fn()).max()
            t_ms = timed(ms_fn, args.repeats)
            print(f"{tower:<6} {batch:>5} {batch / t_torch:>9.1f} {batch / t_ms:>10.1f} {t_torch / t_ms:>6.2f} "
                  f"{diff:>10.2e}")


if __name__ == "__main__":
    configure_logging()
    sys.exit(run_cli(main, prog="benchmark_clip.py"))

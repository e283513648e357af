#!/usr/bin/env python
"""Peak memory of one CLIP training step with and without gradient checkpointing (``recompute_config``).

    python scripts/benchmark_recompute.py [--width 256] [--layers 6] [--batch 32] [--image_size 96]

Each mode runs in a fresh process (one graph-mode forward + backward of CLIPWithLoss, compiled and run twice);
its peak resident memory (``ru_maxrss``) is printed with the gradients' largest difference from the other mode.
"""
import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def step(args, recompute):
    """One forward+backward in this process; returns (peak RSS MiB, gradients)."""
    import mindspore as ms

    from mindram.losses import CLIPWithLoss
    from mindram.models.clip import CLIPConfig, CLIPModel
    from mindram.parallel.recompute import apply_recompute

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(0)
    tower = dict(hidden_size=args.width, num_hidden_layers=args.layers, num_attention_heads=args.width // 64,
                 intermediate_size=4 * args.width)
    model = CLIPModel(CLIPConfig.from_dict(dict(
        projection_dim=args.width, vision_config=dict(image_size=args.image_size, patch_size=8, **tower),
        text_config=dict(vocab_size=49408, max_position_embeddings=32, **tower))))
    if recompute:
        apply_recompute(model, True)
    rng = np.random.default_rng(0)
    pixels = ms.Tensor(rng.normal(size=(args.batch, 3, args.image_size, args.image_size)).astype(np.float32))
    ids = ms.Tensor(rng.integers(1, 49000, size=(args.batch, 32)).astype(np.int32))
    grad = ms.value_and_grad(CLIPWithLoss(model), None, model.trainable_params())
    for _ in range(2):
        _, grads = grad(pixels, ids)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, [g.asnumpy() for g in grads]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image_size", type=int, default=96)
    parser.add_argument("--worker", choices=["off", "on"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        peak, grads = step(args, args.worker == "on")
        np.savez(args.out, peak=peak, *grads)
        return 0
    results, folder = {}, Path(tempfile.mkdtemp(prefix="benchmark_recompute_"))
    for mode in ("off", "on"):
        out = folder / f"{mode}.npz"
        subprocess.run([sys.executable, __file__, "--worker", mode, "--out", str(out), "--width", str(args.width),
                        "--layers", str(args.layers), "--batch", str(args.batch), "--image_size",
                        str(args.image_size)], check=True)
        with np.load(out) as data:
            results[mode] = (float(data["peak"]), [data[k] for k in data.files if k != "peak"])
        out.unlink()
    folder.rmdir()
    difference = max(float(np.abs(a - b).max()) for a, b in zip(results["off"][1], results["on"][1]))
    print(json.dumps({"peak_rss_mib_recompute_off": round(results["off"][0], 1),
                      "peak_rss_mib_recompute_on": round(results["on"][0], 1),
                      "max_grad_difference": difference,
                      **{k: v for k, v in vars(args).items() if k not in ("worker", "out")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

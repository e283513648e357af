#!/usr/bin/env python
"""Throughput of mindram vs the recognize-anything reference (torch CPU) for RAM++ tagging at 384 px, one run.

    python scripts/benchmark_ram.py [--vit swin_l] [--batch_sizes 1 4] [--repeats 3] \\
        [--reference_python /work/refvenv/bin/python --reference_path /work/ref/recognize-anything]

Prints images/s of ``generate_tag`` (Swin encoder + RAM++ tagging head + thresholding) for both and
the ratio mindram ÷ torch (> 1 means mindram is faster), plus the max-abs-diff of the tag logits
(and their spread, so the diff has a scale).

The reference needs torch, timm, transformers < 4.56 and fairscale, which mindram does not use, so it
runs in a SUBPROCESS of ``--reference_python`` with ``--reference_path`` on its ``sys.path``. That
process builds ``RAM_plus(image_size=384, vit=...)`` with seeded random weights (label embeddings set
to random unit rows: the reference initialises them with zeros), writes its state dict as
safetensors into a temporary folder, times ``generate_tag`` and writes its logits for the seeded
inputs. This process then converts the same weights with
:func:`mindram.models.ram.convert.convert_state_dict`, times ``RAMPlus.generate_tag`` (whose graph
is compiled in the warm-up) and compares the logits. The two sides run one after the other, never
at the same time. The reference's ``init_tokenizer('bert-base-uncased')`` would need the Hugging
Face hub; the tagging head deletes its embeddings anyway, so a local synthetic ``vocab.txt`` stands
in (as in ``tests/fixtures/ram/make_fixtures.py``). Without the flags, or when the reference cannot
be imported, only mindram numbers (random weights) are printed, with the reason.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_timing import timed  # noqa: E402

SEED = 0
IMAGE_SIZE = 384


# ---------------------------------------------------------------- torch reference side (subprocess)
def reference_main(args):
    """Runs under --reference_python: build the reference, dump weights + logits, time generate_tag."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.path.insert(0, str(Path(args.reference_path).resolve()))
    import importlib

    import safetensors.numpy
    import torch
    ref_ram_plus = importlib.import_module("ram.models.ram_plus")  # `import ram.models.ram_plus` gives a function

    work = Path(args.workdir)
    vocab_dir = work / "vocab"
    vocab_dir.mkdir(exist_ok=True)
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + \
        ["a", "picture", "of", "dog", "cat", "red", "|"]
    (vocab_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")

    torch.manual_seed(SEED)
    model = ref_ram_plus.RAM_plus(image_size=IMAGE_SIZE, vit=args.vit, text_encoder_type=str(vocab_dir))
    with torch.no_grad():
        embed = torch.randn(model.label_embed.shape)
        model.label_embed.copy_(embed / embed.norm(dim=-1, keepdim=True))
    model.eval()
    state = {k: v.detach().contiguous().numpy() for k, v in model.state_dict().items()}
    safetensors.numpy.save_file(state, str(work / "weights.safetensors"))
    del state

    seen = {}
    model.fc.register_forward_hook(lambda m, i, o: seen.__setitem__("logits", o.squeeze(-1)))
    inputs = safetensors.numpy.load_file(str(work / "inputs.safetensors"))
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "seconds": {}}
    logits = {}
    with torch.no_grad():
        for batch in args.batch_sizes:
            pixels = torch.from_numpy(inputs[f"pixels_{batch}"])
            model.generate_tag(pixels)
            logits[f"logits_{batch}"] = seen["logits"].numpy().copy()
            result["seconds"][str(batch)] = timed(lambda: model.generate_tag(pixels), args.repeats)
    safetensors.numpy.save_file(logits, str(work / "logits.safetensors"))
    (work / "result.json").write_text(json.dumps(result))


def run_reference(args, work):
    """(result dict, None) from the subprocess, or (None, reason)."""
    if not args.reference_python or not args.reference_path:
        return None, "no --reference_python/--reference_path given"
    cmd = [args.reference_python, str(Path(__file__).resolve()), "--_reference", "--workdir", str(work),
           "--vit", args.vit, "--repeats", str(args.repeats), "--reference_path", args.reference_path,
           "--batch_sizes", *map(str, args.batch_sizes)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not (work / "result.json").exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return None, f"the reference failed (exit {proc.returncode}): {tail[0]}"
    return json.loads((work / "result.json").read_text()), None


# ---------------------------------------------------------------- mindram side
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vit", default="swin_l", choices=["swin_l", "swin_b"])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference_python", help="python of a venv with the reference's dependencies")
    parser.add_argument("--reference_path", help="checkout of recognize-anything (commit 7cb804a)")
    parser.add_argument("--_reference", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._reference:
        return reference_main(args)

    with tempfile.TemporaryDirectory(prefix="benchmark_ram_") as tmp:
        work = Path(tmp)
        import safetensors.numpy
        rng = np.random.default_rng(SEED)
        safetensors.numpy.save_file(
            {f"pixels_{b}": rng.standard_normal((b, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
             for b in args.batch_sizes}, str(work / "inputs.safetensors"))
        inputs = safetensors.numpy.load_file(str(work / "inputs.safetensors"))
        ref, why = run_reference(args, work)  # runs to completion before mindram starts: no CPU sharing

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        import mindspore as ms

        import mindram
        from mindram.models.ram.convert import convert_state_dict
        config = mindram.RAMConfig.from_pretrained(f"ram_plus_{args.vit}_{IMAGE_SIZE}")
        model = mindram.RAMPlus(config)
        ref_logits = {}
        if ref is not None:
            params, _ = convert_state_dict(safetensors.numpy.load_file(str(work / "weights.safetensors")), config)
            model.load_weights(params)
            del params
            ref_logits = safetensors.numpy.load_file(str(work / "logits.safetensors"))
        model.set_train(False)

        torch_info = (f"torch {ref['torch']} with {ref['threads']} threads (subprocess)" if ref is not None
                      else f"torch reference not run: {why}")
        print(f"RAM++ {args.vit} @ {IMAGE_SIZE}, generate_tag, mindspore {ms.__version__} "
              f"({ms.get_context('device_target')}), {os.cpu_count()} CPUs on {platform.machine()}, "
              f"{torch_info}, median of {args.repeats}")
        print(f"{'batch':>5} {'torch/s':>9} {'mindram/s':>10} {'ratio':>6} {'max|diff|':>10} {'logit std':>10}")
        for batch in args.batch_sizes:
            pixels = inputs[f"pixels_{batch}"]
            t_ms = timed(lambda: model.generate_tag(pixels), args.repeats)
            if ref is None:
                print(f"{batch:>5} {'-':>9} {batch / t_ms:>10.2f} {'-':>6} {'-':>10} {'-':>10}")
                continue
            expected = ref_logits[f"logits_{batch}"]
            diff = np.abs(model.get_tag_logits(pixels) - expected).max()
            t_torch = ref["seconds"][str(batch)]
            print(f"{batch:>5} {batch / t_torch:>9.2f} {batch / t_ms:>10.2f} {t_torch / t_ms:>6.2f} {diff:>10.2e} "
                  f"{expected.std():>10.2e}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Throughput of mindram vs the recognize-anything reference (torch CPU) for RAM++ tagging at 384 px, same run.

    python scripts/benchmark_ram.py --reference_path /work/ref/recognize-anything --reference_deps /work/refdeps \\
        [--vit swin_l] [--batch_sizes 1 4] [--rounds 5] [--min_round_s 2] [--json FILE]

Each batch size is a case of ``bench_harness`` (interleaved rounds of two worker processes, see
``scripts/bench_harness.py``); the figure is images/s of ``generate_tag`` (Swin encoder + RAM++ tagging head +
thresholding), with the ratio mindram ÷ torch (> 1: mindram is faster) and the max-abs-diff of the tag logits.

The reference needs timm, transformers < 4.56 and fairscale, which mindram does not use: its worker runs this
interpreter with ``PYTHONPATH=<reference_deps>:<reference_path>`` put first (``--reference_python`` for another
interpreter). It builds ``RAM_plus(image_size=384, vit=...)`` with seeded random weights (label embeddings set to
random unit rows: the reference initialises them with zeros) and writes its state dict and the seeded pixels
into the case's folder; its logits are read by a hook on ``fc``. The reference's
``init_tokenizer('bert-base-uncased')`` would need the Hugging Face hub; the tagging head deletes its embeddings
anyway, so a local synthetic ``vocab.txt`` stands in (as in ``tests/fixtures/ram/make_fixtures.py``). The mindram
worker converts the same weights with :func:`mindram.models.ram.convert.convert_file` (a child process), loads them
with ``RAMPlus.from_pretrained`` and times
``RAMPlus.generate_tag`` (graph compiled in the warm-up).
"""
import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bench_worker import Workload, count_torch_flops  # noqa: E402

SEED = 0
IMAGE_SIZE = 384
WEIGHTS, INPUTS = "weights.safetensors", "inputs.safetensors"
VOCAB = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + \
    ["a", "picture", "of", "dog", "cat", "red", "|"]


# ---------------------------------------------------------------- torch reference side (its own worker)
def torch_ram_plus(workdir, vit, batch):
    """The reference ``RAM_plus.generate_tag`` on ``batch`` seeded images; writes the weights and the pixels."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import safetensors.numpy
    import torch
    ram_plus = importlib.import_module("ram.models.ram_plus")  # `import ram.models.ram_plus` gives a function

    work = Path(workdir)
    (work / "vocab").mkdir(exist_ok=True)
    (work / "vocab" / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    torch.manual_seed(SEED)
    model = ram_plus.RAM_plus(image_size=IMAGE_SIZE, vit=vit, text_encoder_type=str(work / "vocab"))
    with torch.no_grad():
        embed = torch.randn(model.label_embed.shape)
        model.label_embed.copy_(embed / embed.norm(dim=-1, keepdim=True))
    model.eval()
    safetensors.numpy.save_file({k: v.detach().contiguous().numpy() for k, v in model.state_dict().items()},
                                str(work / WEIGHTS))
    pixels = np.random.default_rng(SEED).standard_normal((batch, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    safetensors.numpy.save_file({"pixels": pixels}, str(work / INPUTS))
    seen = {}
    model.fc.register_forward_hook(lambda module, args, out: seen.__setitem__("logits", out.squeeze(-1)))
    images = torch.from_numpy(pixels)

    def run():
        with torch.no_grad():
            return model.generate_tag(images)

    def logits():
        run()
        return seen["logits"].numpy()

    import timm
    import transformers
    return Workload(run, batch, "torch", output=logits, flops=lambda: count_torch_flops(run),
                    versions={"torch": torch.__version__, "timm": timm.__version__,
                              "transformers": transformers.__version__, "torch_threads": torch.get_num_threads()})


# ---------------------------------------------------------------- mindram side
MINDRAM_CHECKPOINT = "mindram/model.safetensors"


def convert_weights(workdir, vit):
    """The reference side's weights converted to a mindram checkpoint + config (``convert_file``)."""
    from mindram.models.ram.convert import convert_file
    target = Path(workdir) / MINDRAM_CHECKPOINT
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        convert_file(str(Path(workdir) / WEIGHTS), str(target), model_name=f"ram_plus_{vit}_{IMAGE_SIZE}")


def mindram_ram_plus(workdir, vit, batch):
    """mindram's ``RAMPlus.generate_tag`` on the reference's weights (converted once by a child process, loaded
    with ``from_pretrained``, so that the worker's setup peak is that of loading), on the same images."""
    sys.path.insert(0, str(HERE.parent))
    import mindspore as ms
    import safetensors.numpy

    import mindram
    from bench_worker import run_in_child
    if not (Path(workdir) / MINDRAM_CHECKPOINT).is_file():
        run_in_child(__file__, "convert_weights", str(workdir), vit)
    model = mindram.RAMPlus.from_pretrained(str(Path(workdir) / MINDRAM_CHECKPOINT))
    model.set_train(False)
    pixels = ms.Tensor(safetensors.numpy.load_file(str(Path(workdir) / INPUTS))["pixels"])
    return Workload(lambda: model.generate_tag(pixels), batch, "mindspore",
                    output=lambda: model.get_tag_logits(pixels),
                    versions={"mindspore": ms.__version__, "device": ms.get_context("device_target")})


# ---------------------------------------------------------------- cases and CLI
def reference_env(reference_path, reference_deps):
    """The reference worker's extra environment: its checkout and dependencies first on ``PYTHONPATH``."""
    paths = [p for p in (reference_deps, reference_path) if p] + \
        [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"PYTHONPATH": os.pathsep.join(str(p) for p in paths)}


def reference_problem(reference_path, reference_deps, python=sys.executable):
    """None when the reference imports in its environment, else the reason (one line)."""
    if not reference_path:
        return "no --reference_path (a recognize-anything checkout) given"
    proc = subprocess.run([python, "-c", "import importlib; importlib.import_module('ram.models.ram_plus')"],
                          capture_output=True, text=True, env={**os.environ, **reference_env(reference_path,
                                                                                             reference_deps)})
    if proc.returncode:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()] or ["(no output)"]
        return f"the reference does not import with {reference_path}, {reference_deps}: {lines[-1].strip()}"
    return None


def cases(vit, batch_sizes, reference_path, reference_deps, reference_python=sys.executable):
    """One harness case per batch size."""
    from bench_harness import Case, Side
    module = str(Path(__file__).resolve())
    env = reference_env(reference_path, reference_deps)
    return [Case(f"RAM++ {vit} {IMAGE_SIZE} generate_tag bs{batch}", "img",
                 Side("torch", module, "torch_ram_plus", dict(vit=vit, batch=batch), env=env, python=reference_python),
                 Side("mindram", module, "mindram_ram_plus", dict(vit=vit, batch=batch)))
            for batch in batch_sizes]


def add_reference_arguments(parser):
    parser.add_argument("--reference_path", help="checkout of recognize-anything (commit 7cb804a)")
    parser.add_argument("--reference_deps", help="folder with the reference's dependencies (put on PYTHONPATH)")
    parser.add_argument("--reference_python", default=sys.executable,
                        help="interpreter of the reference worker (default: this one)")
    return parser


def main(argv=None):
    from bench_harness import add_run_arguments, run_and_report

    from mindram.errors import ConfigError
    from mindram.utils.cli import add_debug_flag
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vit", default="swin_l", choices=["swin_l", "swin_b"])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4])
    args = add_debug_flag(add_reference_arguments(add_run_arguments(parser, rounds=5))).parse_args(argv)
    problem = reference_problem(args.reference_path, args.reference_deps, args.reference_python)
    if problem:
        raise ConfigError(problem)
    run_and_report(cases(args.vit, args.batch_sizes, args.reference_path, args.reference_deps,
                         args.reference_python), args, argv, "scripts/benchmark_ram.py")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    from mindram.utils.cli import configure_logging, run_cli
    configure_logging()
    sys.exit(run_cli(main, prog="benchmark_ram.py"))

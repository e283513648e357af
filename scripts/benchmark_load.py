#!/usr/bin/env python
"""Loading pretrained CLIP weights: mindram's ``CLIPModel.from_pretrained`` vs open_clip's
``create_model(name, pretrained=FILE)``, same weights, same run: seconds and peak memory per load.

    python scripts/benchmark_load.py [--models ViT-B-32 ViT-B-16 ViT-L-14] [--rounds 5] [--min_round_s 0] \\
        [--json FILE]

Each model is a case of ``bench_harness`` (interleaved rounds in two worker processes, see
``scripts/bench_harness.py``). The open_clip side builds the model with seeded random weights and writes them as
``open_clip.safetensors`` into the case's folder (setup, not measured); each call then loads that file as an
open_clip user does (a model built with its initial values, then the whole file read and copied in). The mindram
side converts the same file with ``mindram.models.clip.convert.convert_file`` (setup, in a child process) and each
call is ``CLIPModel.from_pretrained(model.ckpt)``: the model built without initial values, the checkpoint streamed into it
one tensor at a time.

Read the *running* peak RSS of the table (memory while loading, above the process's own imports; both sides have
imported their framework in setup) and the loads/s ratio (> 1: mindram loads faster). The features compared across
sides are the loaded ``visual.proj`` values. Each call starts with ``gc.collect()`` on both sides: a dropped
MindSpore model is held by reference cycles until the cyclic garbage collector runs (measured: four loads in a row
without it held four models). The torch side needs the test extra (torch, open_clip_torch).
"""
import argparse
import gc
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bench_worker import Workload  # noqa: E402
from benchmark_clip import SEED, mindspore_versions, torch_versions  # noqa: E402
TORCH_FILE, MINDRAM_FILE = "open_clip.safetensors", "mindram/model.ckpt"


def torch_load(workdir, model):
    """open_clip: ``create_model(model, pretrained=<file>)`` (the reference side; writes the file first)."""
    import open_clip
    import safetensors.torch
    import torch
    torch.manual_seed(SEED)
    path = Path(workdir) / TORCH_FILE
    built = open_clip.create_model(model, pretrained=None)
    safetensors.torch.save_file({k: v.contiguous() for k, v in built.state_dict().items()}, str(path))
    del built
    gc.collect()

    def run():
        gc.collect()   # as on the mindram side
        return open_clip.create_model(model, pretrained=str(path)).eval()

    return Workload(run, 1, "torch", output=lambda: run().visual.proj.detach().numpy(),
                    versions=torch_versions(torch))


def mindram_load(workdir, model):
    """mindram: ``CLIPModel.from_pretrained`` on the same weights converted by ``convert_file`` (setup)."""
    import benchmark_clip
    import mindram
    from bench_worker import run_in_child
    target = Path(workdir) / MINDRAM_FILE
    if not target.is_file():   # in a child process: the setup peak is not the conversion's
        run_in_child(benchmark_clip.__file__, "convert_weights", str(workdir), model, TORCH_FILE, MINDRAM_FILE)
    gc.collect()

    def run():
        gc.collect()   # the previous call's model: MindSpore Cells hold reference cycles, only the cyclic GC frees them
        return mindram.CLIPModel.from_pretrained(target)

    return Workload(run, 1, "mindspore", output=lambda: run().visual.proj.asnumpy(), versions=mindspore_versions())


def cases(models):
    from bench_harness import Case, Side
    module = str(Path(__file__).resolve())
    return [Case(f"load CLIP {model}", "load", Side("torch", module, "torch_load", dict(model=model)),
                 Side("mindram", module, "mindram_load", dict(model=model))) for model in models]


def main(argv=None):
    import bench_harness

    from mindram.utils.cli import add_debug_flag
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ViT-B-32"], help="open_clip architecture names")
    args = add_debug_flag(bench_harness.add_run_arguments(parser, rounds=5, min_round_s=0.0)).parse_args(argv)
    bench_harness.run_and_report(cases(args.models), args, argv, "scripts/benchmark_load.py")


if __name__ == "__main__":
    from mindram.utils.cli import configure_logging, run_cli
    configure_logging()
    sys.exit(run_cli(main, prog="benchmark_load.py"))

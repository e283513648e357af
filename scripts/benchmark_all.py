#!/usr/bin/env python
"""Run the performance issue's benchmark cases with ``bench_harness`` and write ``docs/benchmarks.md``.

    python scripts/benchmark_all.py [--quick] [--groups clip load ram train] [--match TEXT ...] \\
        [--reference_path /work/ref/recognize-anything --reference_deps /work/refdeps] [--json FILE]

Cases (mindram vs torch, same weights, interleaved rounds in two worker processes; see ``bench_harness.py``):

- ``clip``: CLIP image and text towers at batch 1, 8 and 32 for ViT-B-32, ViT-B-16 and ViT-L-14 (open_clip), the text
  tower on typical captions (``text``, 13-14 tokens) and on captions that fill the 77-token context (``text_full``), with
  MindSpore and, as a second candidate, mindram's ONNX Runtime backend on an export of the same weights
  (``--backends``; cases ending in ``onnxruntime``);
- ``load``: loading pretrained CLIP weights (``CLIPModel.from_pretrained`` vs open_clip's
  ``create_model(pretrained=FILE)``) for the same architectures (``--load_models``): seconds and peak memory;
- ``ram``: RAM++ Swin-L 384 ``generate_tag`` at batch 1 and 4 against recognize-anything, when
  ``--reference_path`` / ``--reference_deps`` give an environment where it imports (otherwise skipped, and the
  document says why);
- ``train``: the CLIP ViT-B-32 training step at batch 32 (open_clip + torch AdamW vs mindram's ``TrainStep``).

``--quick``: ViT-B-32 towers at batch 1 and 32, RAM++ Swin-B 384 at batch 1 (the smallest RAM++ both
implementations configure), the training step at batch 8, 5 rounds of about 1 s. ``--models``,
``--batch_sizes``, ``--load_models``, ``--ram_vit``, ``--ram_batch_sizes``, ``--train_batch_sizes`` override either preset and
``--match`` keeps the cases whose name contains one of the given texts, ``--skip`` leaves out those that contain
one. A case that fails (after ``--retries`` more tries) is reported as one line in the table and the run goes on. The document (``--output``, default
``docs/benchmarks.md``) and ``--json`` are written atomically after every case, so that an interrupted run
leaves the cases measured so far.
"""
import argparse
import dataclasses
import shlex
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(HERE), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import bench_harness  # noqa: E402
import benchmark_clip  # noqa: E402
import benchmark_load  # noqa: E402
import benchmark_ram  # noqa: E402
import benchmark_train_step  # noqa: E402

PRESETS = {
    "full": dict(models=["ViT-B-32", "ViT-B-16", "ViT-L-14"], batch_sizes=[1, 8, 32], backends=["mindspore",
                 "onnxruntime"], load_models=["ViT-B-32", "ViT-B-16", "ViT-L-14"], ram_vit="swin_l",
                 ram_batch_sizes=[1, 4], train_batch_sizes=[32], rounds=7, heavy_rounds=5, min_round_s=2.0, warmup=2,
                 heavy_warmup=1),
    "quick": dict(models=["ViT-B-32"], batch_sizes=[1, 32], backends=["mindspore"], load_models=["ViT-B-32"],
                  ram_vit="swin_b",
                  ram_batch_sizes=[1], train_batch_sizes=[8], rounds=5, heavy_rounds=5, min_round_s=1.0, warmup=2,
                  heavy_warmup=1),
}
GROUPS = ("clip", "load", "ram", "train")
NOT_RUN = "not yet run"


def parse_args(argv):
    from mindram.utils.cli import add_debug_flag
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small preset (see the module docstring)")
    parser.add_argument("--groups", nargs="+", choices=GROUPS, default=list(GROUPS),
                        help="which groups of cases, run in this order")
    parser.add_argument("--match", nargs="+", help="keep only the cases whose name contains one of these texts")
    parser.add_argument("--skip", nargs="+", help="leave out the cases whose name contains one of these texts")
    parser.add_argument("--models", nargs="+", help="open_clip architectures of the tower cases")
    parser.add_argument("--batch_sizes", type=int, nargs="+", help="batch sizes of the tower cases")
    parser.add_argument("--backends", nargs="+", choices=sorted(benchmark_clip.CANDIDATES),
                        help="mindram backends of the tower cases (onnxruntime: on an ONNX export)")
    parser.add_argument("--load_models", nargs="+", help="open_clip architectures of the load cases")
    parser.add_argument("--ram_vit", choices=["swin_l", "swin_b"])
    parser.add_argument("--ram_batch_sizes", type=int, nargs="+")
    parser.add_argument("--train_batch_sizes", type=int, nargs="+")
    parser.add_argument("--rounds", type=int, help="rounds of the tower cases (default 7, --quick 5; >= 5)")
    parser.add_argument("--heavy_rounds", type=int, help="rounds of the RAM and training cases (default 5; >= 5)")
    parser.add_argument("--warmup", type=int, help="unmeasured calls per side before the rounds of the tower "
                        "cases, after the output check's call (default 2)")
    parser.add_argument("--heavy_warmup", type=int, help="the same for the RAM and training cases (default 1)")
    parser.add_argument("--min_round_s", type=float, help="a round lasts about this long (default 2, --quick 1)")
    parser.add_argument("--gemm_n", type=int, default=2048, help="size of the matmul measuring the GEMM peak")
    parser.add_argument("--retries", type=int, default=0,
                        help="measure a failed case again up to this many times (e.g. after a source file changed "
                             "under a graph compilation)")
    benchmark_ram.add_reference_arguments(parser)
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"), help="markdown report to write")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = add_debug_flag(parser).parse_args(argv)
    for key, value in PRESETS["quick" if args.quick else "full"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def planned_cases(args):
    """``[(case, settings)]`` of the selected groups, in the order of ``--groups``, and ``{group: reason}`` for the
    groups skipped."""
    tower_settings = bench_harness.Settings(rounds=args.rounds, warmup=args.warmup, min_round_s=args.min_round_s,
                                            gemm_n=args.gemm_n)
    heavy_settings = dataclasses.replace(tower_settings, rounds=args.heavy_rounds, warmup=args.heavy_warmup)
    planned, skipped = [], {}
    for group in dict.fromkeys(args.groups):
        if group == "clip":
            planned += [(c, tower_settings) for c in benchmark_clip.cases(args.models, benchmark_clip.TOWERS,
                                                                          args.batch_sizes, args.backends)]
        elif group == "load":
            planned += [(c, heavy_settings) for c in benchmark_load.cases(args.load_models)]
        elif group == "ram":
            problem = benchmark_ram.reference_problem(args.reference_path, args.reference_deps,
                                                      args.reference_python)
            if problem:
                skipped["ram"] = problem
                continue
            planned += [(c, heavy_settings) for c in benchmark_ram.cases(
                args.ram_vit, args.ram_batch_sizes, args.reference_path, args.reference_deps, args.reference_python)]
        else:
            planned += [(c, heavy_settings) for c in benchmark_train_step.cases(["ViT-B-32"],
                                                                                args.train_batch_sizes)]
    if args.match:
        planned = [(c, s) for c, s in planned if any(text in c.name for text in args.match)]
    if args.skip:
        planned = [(c, s) for c, s in planned if not any(text in c.name for text in args.skip)]
    return planned, skipped


# ---------------------------------------------------------------- the markdown document
def _cell(value):
    return str(value).replace("|", "\\|")


def markdown_table(header, rows):
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        row = row if len(row) == len(header) else row + [""] * (len(header) - len(row))
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return lines


def load_note(document):
    """A sentence on the load average: whether other processes shared the machine during the rounds."""
    cpus = document["machine"]["usable_cpus"]
    loads = [c["loadavg_1min"] for c in document["cases"] if "loadavg_1min" in c]
    if not loads:
        return "No round was measured."
    top = max(load["max"] for load in loads)
    median = statistics.median(load["median"] for load in loads)
    start = document["machine"]["loadavg_start"][0]
    text = (f"1-minute load average: {start:.2f} before the run; during the rounds median {median:.2f}, up to "
            f"{top:.2f}, on {cpus} CPUs. A benchmark side alone keeps it near {cpus} (one busy thread per core).")
    if top > cpus + 1:
        return text + (" **The machine was shared**: other processes competed for the CPUs during this run, so "
                       "absolute rates are low and noisy; each ratio compares the two sides round by round, "
                       "under the same load, but a side that suffers more from contention (spinning OpenMP "
                       "threads) is penalised. Rerun on a quiet machine for absolute figures.")
    return text + " The machine was quiet."


def machine_lines(document):
    machine, peaks = document["machine"], document["gemm_peak_gflops"]
    versions = {}
    for case in document["cases"]:
        for side in case.get("sides", {}).values():
            versions.update(side["versions"])
    peak_text = ", ".join(f"{k} {v:.1f}" for k, v in peaks["per_framework"].items()) or "not measured"
    settings = document["settings"]
    return [
        f"- CPU: {machine['cpu']}, {machine['usable_cpus']} usable of {machine['cpu_count']} CPUs, "
        f"{machine['memory_gib']:.1f} GiB memory" if machine["memory_gib"] else f"- CPU: {machine['cpu']}",
        f"- {machine['platform']}, Python {machine['python']}, mindram {machine['mindram_revision']}",
        "- Libraries: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if k not in ("python",)),
        "- Thread variables: " + (", ".join(f"{k}={v}" for k, v in machine["env"].items()) or "none set"),
        f"- GEMM peak (fp32 {settings['gemm_n']}³ matmul, best of {settings['gemm_repeats']}, measured in every "
        f"case's workers after its rounds; the best of the run), GFLOP/s: {peak_text}. "
        f"% of peak uses the best of all: {peaks['machine'] and round(peaks['machine'], 1)} GFLOP/s.",
    ]


def load_rows(document):
    rows = []
    for case in document["cases"]:
        if "loadavg_1min" not in case:
            continue
        load, sides = case["loadavg_1min"], case["sides"]
        util = " / ".join(f"{sides[s]['cpu_utilisation']['median']:.2f}" for s in (case["reference"],
                                                                                     case["candidate"]))
        rows.append([case["name"], f"{load['median']:.2f} [{load['min']:.2f}–{load['max']:.2f}]", util,
                     f"{case['settings']['rounds']} × ~{case['settings']['min_round_s']:g} s"])
    return rows


def markdown(document, skipped):
    lines = ["# Benchmarks", "",
             f"Generated by `scripts/benchmark_all.py` ({document['started']} – {document['finished']}); do not "
             "edit by hand, rerun it. The exact command:", "", "```", document["command"], "```", "",
             load_note(document), "",
             "mindram vs torch (open_clip 3.3 / recognize-anything), same weights, same inputs, same run. Each side "
             "runs in its own worker process; the sides alternate round by round (which goes first alternates too), "
             "warm-up excluded. Rates are per second (images, or texts for text towers), median of the rounds; the "
             "ratio is mindram ÷ torch per round, median [min–max] (> 1: mindram is faster). GFLOP/s counts the "
             "matmul, convolution and attention FLOPs of the work (torch's FlopCounterMode on the reference); "
             "% GEMM peak divides it by the machine's measured fp32 GEMM rate. *text* rows encode 13-14-token "
             "captions: open_clip runs all 77 positions, mindram's MindSpore text tower only those up to the last "
             "end-of-text token (rounded up to 16; `text_config.trim_padding`, exact under the causal mask), and its "
             "GFLOP/s counts the positions it computes; *text_full* rows encode captions that fill the 77-token "
             "context, where nothing can be skipped. Rows ending in *onnxruntime* measure "
             "mindram's ONNX Runtime backend (`backend=\"onnxruntime\"` on an export of the same weights) instead of "
             "its MindSpore graphs. Peak RSS is each worker's own, in two parts: *running* is the peak from the "
             "first call (graph compilation included) through the rounds (Linux `VmHWM`, reset when setup ends); "
             "*setup* is the peak of building the model and loading its weights (the torch side also writes the "
             "shared weights file; the mindram side converts it once in a child process, whose memory is not "
             "counted, and loads the result with `from_pretrained`, as a user would). ONNX Runtime rows load their "
             "session lazily, so their setup holds no weights. max|diff| compares the outputs "
             "(features, tag logits, or the first training step's loss).", ""]
    lines += markdown_table(bench_harness.TABLE_HEADER, bench_harness.table_rows(document))
    if skipped:
        lines += [""] + [f"Not measured (the run stopped or was still going when this was written): {reason}."
                         if group == NOT_RUN else f"Skipped `{group}`: {reason}." for group, reason in skipped.items()]
    lines += ["", "## Machine", ""] + machine_lines(document)
    lines += ["", "## Load average and CPU use per case", "",
              "1-minute load average before each round; CPU utilisation = CPU seconds ÷ wall seconds of a side's "
              "worker (all its threads).", ""]
    lines += markdown_table(["case", "load median [min–max]", "CPU utilisation torch / mindram", "rounds"],
                            load_rows(document))
    return "\n".join(lines) + "\n"


def write_markdown(path, text):
    from mindram.utils.io import atomic_write
    with atomic_write(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_outputs(args, results, planned, skipped, command, started, machine):
    """The run's document from the cases measured so far, written to ``--output`` (and ``--json``)."""
    document = bench_harness.report(results, planned[0][1], command, started, machine)
    document["skipped"] = dict(skipped)
    if len(results) < len(planned):
        document["skipped"][NOT_RUN] = ", ".join(case.name for case, _ in planned[len(results):])
    write_markdown(args.output, markdown(document, document["skipped"]))
    if args.json:
        bench_harness.write_json(args.json, document)
    return document


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    planned, skipped = planned_cases(args)
    for _, settings in planned:
        settings.check()
    if not planned:
        raise bench_harness.BenchError("no case selected (see --groups and --match)"
                                       + "".join(f"; {g} skipped: {r}" for g, r in skipped.items()))
    started, machine = bench_harness.now(), bench_harness.machine_info()
    command = shlex.join(["python", "scripts/benchmark_all.py", *argv])
    results = []
    for index, (case, settings) in enumerate(planned, 1):
        print(f"[{index}/{len(planned)}] {case.name}", file=sys.stderr, flush=True)
        results += bench_harness.run_cases([case], settings, retries=args.retries)
        # written after every case: an interrupted run leaves the cases measured so far
        document = write_outputs(args, results, planned, skipped, command, started, machine)
    bench_harness.print_table(document)
    return 1 if any("error" in case for case in results) else 0


if __name__ == "__main__":
    from mindram.utils.cli import configure_logging, run_cli
    configure_logging()
    sys.exit(run_cli(main, prog="benchmark_all.py"))

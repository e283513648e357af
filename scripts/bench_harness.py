"""Benchmark harness shared by ``scripts/benchmark_*.py``: two sides of a case (the reference, torch, and mindram)
each in its own persistent worker process (``bench_worker.py``), run in interleaved rounds.

For each case the parent starts both workers, sets up the reference first (it writes the shared weights and inputs
into the case's work folder), then mindram; saves both outputs for the numerical check (max|diff|; this first call
also compiles mindram's graphs); has the reference count the FLOPs of one call; warms both up with ``warmup`` more
calls (excluded from the results; the last one sizes a round to about ``min_round_s``); then runs ``rounds``
rounds, one side after the other, never at the same time, alternating which goes first (torch, mindram | mindram,
torch | ...), with ``os.getloadavg()`` recorded before each. Per side: throughput, wall and CPU time per call (CPU
= ``time.process_time`` of the worker: all its threads), peak RSS (``getrusage`` of the worker) and the GFLOP/s of
its GEMM peak (an ``n``³ fp32 matmul in its framework, after the rounds); peak RSS is split at the end of setup
(see ``bench_worker.py``: running = first call with compilation, warm-up and rounds; setup = building, loading and
writing the shared files). The ratio is mindram ÷ torch throughput,
per round, summarised by median and min–max. GFLOP/s = FLOPs of one call ÷ wall time; % of peak divides it by the
best GEMM GFLOP/s of the run.
"""
import dataclasses
import datetime
import json
import math
import os
import platform
import select
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from mindram.errors import MindramError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKER = HERE / "bench_worker.py"
SCHEMA = "mindram-benchmark/1"
MIN_ROUNDS = 5


class BenchError(MindramError):
    """A case could not be measured (one line naming the case and the side)."""


@dataclasses.dataclass
class Side:
    """One implementation of a case: ``factory(workdir=..., **kwargs)`` in the file ``module`` returns its
    ``bench_worker.Workload``. ``env``: variables added to the worker's environment (e.g. a reference's
    ``PYTHONPATH``); ``python``: the interpreter (default this one)."""

    name: str
    module: str
    factory: str
    kwargs: dict = dataclasses.field(default_factory=dict)
    env: dict = dataclasses.field(default_factory=dict)
    python: str = sys.executable


@dataclasses.dataclass
class Case:
    """A measured comparison: ``reference`` (set up first; its FLOP count is used for both) and ``candidate``."""

    name: str
    unit: str
    reference: Side
    candidate: Side


@dataclasses.dataclass
class Settings:
    rounds: int = 7
    warmup: int = 2
    min_round_s: float = 2.0
    gemm_n: int = 2048
    gemm_repeats: int = 3
    timeout_s: float = 3600.0

    def check(self):
        if self.rounds < MIN_ROUNDS:
            raise BenchError(f"rounds={self.rounds}: need at least {MIN_ROUNDS} rounds for a median and a spread")
        if self.warmup < 1 or self.min_round_s < 0 or self.gemm_n < 1 or self.gemm_repeats < 1:
            raise BenchError(f"settings {self}: need warmup >= 1, min_round_s >= 0, gemm_n >= 1, gemm_repeats >= 1")


def spread(values):
    """``{"median", "min", "max"}`` of a non-empty list."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def round_order(sides, index):
    """The sides in the order round ``index`` runs them: as given in even rounds, reversed in odd ones."""
    return list(sides) if index % 2 == 0 else list(reversed(sides))


class WorkerProcess:
    """A running ``bench_worker.py`` in ``workdir`` (where the libraries' own files land): requests over a pipe,
    output (and the traceback of a failed request) in ``<workdir>/<side>.log``."""

    def __init__(self, side, case_name, workdir, timeout_s):
        self.side, self.case_name, self.timeout_s = side, case_name, timeout_s
        self.log_path = Path(workdir) / f"{side.name}.log"
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = {**os.environ, **side.env}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([side.python, str(WORKER), "--fds", str(to_child_r), str(from_child_w)],
                                         pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(workdir))
        os.close(to_child_r)
        os.close(from_child_w)
        self.requests = os.fdopen(to_child_w, "w", encoding="utf-8")
        self.replies = os.fdopen(from_child_r, "r", encoding="utf-8")

    def _fail(self, what):
        raise BenchError(f"case {self.case_name!r}: the {self.side.name} worker {what}")

    def _last_log_line(self):
        try:
            lines = [ln.strip() for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            lines = []
        return lines[-1] if lines else "(no output)"

    def request(self, op, **args):
        """Send one request; its reply (without ``ok``), or a :class:`BenchError` naming the case."""
        try:
            self.requests.write(json.dumps({"op": op, **args}) + "\n")
            self.requests.flush()
        except BrokenPipeError:
            self._fail(f"died before {op!r} (exit {self.proc.wait()}): {self._last_log_line()}")
        ready, _, _ = select.select([self.replies], [], [], self.timeout_s)
        if not ready:
            self.close()
            self._fail(f"did not answer {op!r} within {self.timeout_s:g} s")
        line = self.replies.readline()
        if not line:
            self._fail(f"died during {op!r} (exit {self.proc.wait()}): {self._last_log_line()}")
        reply = json.loads(line)
        if not reply.pop("ok"):
            self._fail(f"failed in {op!r}: {reply['error']}")
        return reply

    def close(self):
        if self.proc.poll() is None:
            try:
                self.requests.write(json.dumps({"op": "quit"}) + "\n")
                self.requests.flush()
                self.proc.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.requests, self.replies):
            try:
                stream.close()
            except BrokenPipeError:
                pass


def _side_summary(rounds, items, flops):
    per_call = [r["wall_s"] / r["iters"] for r in rounds]
    summary = {
        "throughput": spread([items * r["iters"] / r["wall_s"] for r in rounds]),
        "wall_s_per_call": spread(per_call),
        "cpu_s_per_call": spread([r["cpu_s"] / r["iters"] for r in rounds]),
        "cpu_utilisation": spread([r["cpu_s"] / r["wall_s"] for r in rounds]),
    }
    summary["gflops"] = spread([flops / t / 1e9 for t in per_call]) if flops else None
    return summary


def _max_abs_diff(paths):
    if any(p is None for p in paths):
        return None, None
    reference, candidate = (np.load(p) for p in paths)
    if reference.shape != candidate.shape:
        return f"shapes differ: {reference.shape} vs {candidate.shape}", None
    return float(np.abs(reference - candidate).max()), float(np.abs(reference).max())


def _measure(case, settings, workers):
    """The body of :func:`run_case` once both workers are started."""
    sides = [case.reference, case.candidate]
    info = {}
    for side in sides:   # the reference first: it writes the shared weights and inputs
        info[side.name] = workers[side.name].request("setup", module=side.module, factory=side.factory,
                                                     kwargs=side.kwargs, workdir=str(workers["dir"]),
                                                     side=side.name)
    items = info[case.reference.name]["items"]
    if info[case.candidate.name]["items"] != items:
        raise BenchError(f"case {case.name!r}: the sides process different numbers of {case.unit} per call "
                         f"({items} vs {info[case.candidate.name]['items']})")
    outputs = [workers[s.name].request("output")["path"] for s in sides]
    diff, scale = _max_abs_diff(outputs)
    # a side that does less work than the reference (mindram's text tower skips padding) counts its own FLOPs;
    # one that counts none is credited with the reference's
    flops = {s.name: workers[s.name].request("flops")["flops"] for s in sides}
    reference_flops = flops[case.reference.name]
    iters = {}
    for side in sides:
        for _ in range(settings.warmup):
            last = workers[side.name].request("run", iters=1)["wall_s"]
        iters[side.name] = max(1, math.ceil(settings.min_round_s / max(last, 1e-9)))
    rounds = {s.name: [] for s in sides}
    for index in range(settings.rounds):
        for side in round_order(sides, index):
            load = os.getloadavg()
            record = workers[side.name].request("run", iters=iters[side.name])
            rounds[side.name].append({**record, "round": index, "loadavg": list(load)})
    results = {}
    for side in sides:
        worker = workers[side.name]
        memory = worker.request("memory")
        gemm = worker.request("gemm", n=settings.gemm_n, repeats=settings.gemm_repeats)["gflops"]
        side_flops = flops[side.name] or reference_flops
        results[side.name] = {**_side_summary(rounds[side.name], items, side_flops), "flops_per_call": side_flops,
                              **memory,
                              "framework": info[side.name]["framework"], "gemm_gflops": gemm,
                              "versions": info[side.name]["versions"], "rounds": rounds[side.name]}
    ratios = [(c["iters"] / c["wall_s"]) / (r["iters"] / r["wall_s"])
              for r, c in zip(rounds[case.reference.name], rounds[case.candidate.name])]
    return {"name": case.name, "unit": case.unit, "items": items, "flops_per_call": reference_flops,
            "reference": case.reference.name, "candidate": case.candidate.name,
            "max_abs_diff": diff, "reference_abs_max": scale, "ratio": {**spread(ratios), "per_round": ratios},
            "loadavg_1min": spread([r["loadavg"][0] for side in sides for r in rounds[side.name]]),
            "settings": dataclasses.asdict(settings), "sides": results}


def run_case(case, settings, work_root=None):
    """Measure ``case``; its result dict, or :class:`BenchError` (one line naming the case) on any failure."""
    settings.check()
    with tempfile.TemporaryDirectory(prefix="bench_", dir=work_root) as tmp:
        workers = {"dir": Path(tmp)}
        try:
            for side in (case.reference, case.candidate):
                workers[side.name] = WorkerProcess(side, case.name, tmp, settings.timeout_s)
            return _measure(case, settings, workers)
        finally:
            for name, worker in workers.items():
                if name != "dir":
                    worker.close()


def run_cases(cases, settings, keep_going=True, progress=None, retries=0):
    """Measure each case in turn, trying a failed case up to ``retries`` more times; a case that still fails
    becomes ``{"name", "unit", "error"}`` (or raises, unless ``keep_going``)."""
    results = []
    for case in cases:
        if progress:
            progress(case)
        for attempt in range(retries + 1):
            try:
                results.append(run_case(case, settings))
                break
            except BenchError as error:
                if attempt < retries:
                    print(f"retrying after: {error}", file=sys.stderr, flush=True)
                    continue
                if not keep_going:
                    raise
                results.append({"name": case.name, "unit": case.unit, "error": str(error)})
    return results


def machine_info():
    """CPU model, cores, memory, OS, Python, the repository revision and thread-related environment variables."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    memory = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            memory = next((int(ln.split()[1]) / 2 ** 20 for ln in f if ln.startswith("MemTotal")), None)
    except OSError:
        pass
    try:
        revision = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                                  text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        revision = None
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "memory_gib": memory, "platform": platform.platform(), "python": platform.python_version(),
            "mindram_revision": revision, "loadavg_start": list(os.getloadavg()),
            "env": {k: os.environ[k] for k in sorted(os.environ) if k.endswith("_NUM_THREADS") or k.startswith("OMP_")}}


def gemm_peaks(results):
    """Best GEMM GFLOP/s per framework over the measured cases, and the machine's (the best of all)."""
    peaks = {}
    for case in results:
        for side in case.get("sides", {}).values():
            peaks[side["framework"]] = max(peaks.get(side["framework"], 0.0), side["gemm_gflops"])
    return {"per_framework": peaks, "machine": max(peaks.values()) if peaks else None}


def add_peak_fractions(results, machine_peak):
    """Set each side's ``pct_of_gemm_peak`` (median GFLOP/s ÷ the machine's GEMM peak × 100)."""
    for case in results:
        for side in case.get("sides", {}).values():
            side["pct_of_gemm_peak"] = (100.0 * side["gflops"]["median"] / machine_peak
                                        if side["gflops"] and machine_peak else None)


def report(results, settings, command, started, machine=None):
    """The JSON document of a run (``machine``: :func:`machine_info` taken when the run started)."""
    peaks = gemm_peaks(results)
    add_peak_fractions(results, peaks["machine"])
    machine = dict(machine or machine_info())
    machine["loadavg_end"] = list(os.getloadavg())
    return {"schema": SCHEMA, "command": command, "started": started, "finished": now(),
            "machine": machine, "settings": dataclasses.asdict(settings),
            "gemm_peak_gflops": peaks, "cases": results}


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_json(path, document):
    """Write ``document`` to ``path`` atomically."""
    from mindram.utils.io import atomic_write
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def table_rows(document):
    """One row per case: name, torch/s, mindram/s, ratio median [min–max], GFLOP/s, % of peak, peak RSS while
    running and during setup, max|diff|."""
    rows = []
    for case in document["cases"]:
        if "error" in case:
            rows.append([case["name"], "failed: " + case["error"]])
            continue
        ref, cand = case["sides"][case["reference"]], case["sides"][case["candidate"]]
        ratio = case["ratio"]
        diff = case["max_abs_diff"]
        rows.append([
            case["name"],
            _fmt(ref["throughput"]["median"], ".3g"), _fmt(cand["throughput"]["median"], ".3g"),
            f"{ratio['median']:.2f} [{ratio['min']:.2f}–{ratio['max']:.2f}]",
            f"{_fmt(ref['gflops'] and ref['gflops']['median'], '.1f')} / "
            f"{_fmt(cand['gflops'] and cand['gflops']['median'], '.1f')}",
            f"{_fmt(ref.get('pct_of_gemm_peak'), '.0f')} / {_fmt(cand.get('pct_of_gemm_peak'), '.0f')}",
            f"{_fmt(ref.get('run_peak_rss_mib'), '.0f')} / {_fmt(cand.get('run_peak_rss_mib'), '.0f')}",
            f"{_fmt(ref.get('setup_peak_rss_mib'), '.0f')} / {_fmt(cand.get('setup_peak_rss_mib'), '.0f')}",
            diff if isinstance(diff, str) else _fmt(diff, ".1e"),
        ])
    return rows


TABLE_HEADER = ["case", "torch/s", "mindram/s", "ratio median [min–max]", "GFLOP/s torch / mindram",
                "% GEMM peak", "peak RSS MiB running", "peak RSS MiB setup", "max|diff|"]


def print_table(document, file=None):
    """Plain-text table of :func:`table_rows` with the GEMM peaks and the load average."""
    file = file or sys.stdout
    rows = [TABLE_HEADER] + table_rows(document)
    full = [r for r in rows if len(r) == len(TABLE_HEADER)]
    widths = [max(len(str(r[i])) for r in full) for i in range(len(TABLE_HEADER))]
    for row in rows:   # a failed case's row is its name and the error, unpadded
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths if len(row) == len(widths) else [0] * 2)
                        ).rstrip(), file=file)
    peaks = document["gemm_peak_gflops"]
    print("GEMM peak GFLOP/s: " + ", ".join(f"{k} {v:.1f}" for k, v in peaks["per_framework"].items()), file=file)
    loads = [c["loadavg_1min"]["max"] for c in document["cases"] if "loadavg_1min" in c]
    if loads:
        print(f"1-min load average up to {max(loads):.2f} on {document['machine']['usable_cpus']} CPUs", file=file)


def add_run_arguments(parser, rounds=7, min_round_s=2.0):
    """The harness options every benchmark script takes."""
    parser.add_argument("--rounds", type=int, default=rounds, help="measured rounds per case (at least 5)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up calls per side, not measured")
    parser.add_argument("--min_round_s", type=float, default=min_round_s,
                        help="a round repeats the call until it takes about this long")
    parser.add_argument("--gemm_n", type=int, default=2048, help="size of the matmul measuring the GEMM peak")
    parser.add_argument("--json", help="write the results as JSON to this file")
    return parser


def run_and_report(cases_, args, argv, prog):
    """Measure ``cases_`` with the options of :func:`add_run_arguments`; print the table, write ``--json``."""
    settings = Settings(rounds=args.rounds, warmup=args.warmup, min_round_s=args.min_round_s, gemm_n=args.gemm_n)
    settings.check()
    started, machine = now(), machine_info()
    results = run_cases(cases_, settings, keep_going=False,
                        progress=lambda case: print(f"measuring {case.name}", file=sys.stderr))
    document = report(results, settings, shlex.join([prog, *argv]), started, machine)
    print_table(document)
    if args.json:
        write_json(args.json, document)
    return document

"""The benchmark harness (scripts/bench_harness.py, scripts/bench_worker.py) on tiny numpy workloads.

The module-level factories below are the workloads: each worker process imports this file by path.
"""
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench_worker  # noqa: E402  (numpy only; bench_harness is imported in the tests: it loads mindram)


# ---------------------------------------------------------------- workloads (run inside the workers)
def matmul(workdir, n, log=None, name="side", offset=0.0, sleep_s=0.0, fail=None, flops_scale=1):
    """``n``×``n`` matmul per call; appends ``name`` to ``log`` per call; ``fail``: where to break."""
    if fail == "setup once" and not Path(log).exists():
        Path(log).touch()   # the next setup succeeds
        raise ValueError(f"bad size {n}")
    if fail == "setup":
        raise ValueError(f"bad size {n}")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))

    def run():
        if fail == "run":
            print("boom: simulated crash", file=sys.stderr, flush=True)
            os._exit(3)
        if log:
            with open(log, "a", encoding="utf-8") as f:
                f.write(name + "\n")
        time.sleep(sleep_s)
        return a @ b

    return bench_worker.Workload(run, items=4, framework="numpy", output=lambda: (a @ b)[:3, :3] + offset,
                                 flops=lambda: 2 * n ** 3 * flops_scale, versions={"fake": name})


# ---------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def harness():
    import bench_harness
    return bench_harness


def make_case(harness, name="fake", ref=None, cand=None):
    module = str(Path(__file__).resolve())
    return harness.Case(name, "img", harness.Side("torch", module, "matmul", {"n": 8, **(ref or {})}),
                        harness.Side("mindram", module, "matmul", {"n": 8, **(cand or {})}))


def quick_settings(harness, **overrides):
    return harness.Settings(**{"rounds": 5, "warmup": 2, "min_round_s": 0.0, "gemm_n": 32, "gemm_repeats": 1,
                               "timeout_s": 60.0, **overrides})


# ---------------------------------------------------------------- tests
def test_rounds_alternate_and_warmup_is_excluded(harness, tmp_path):
    log = tmp_path / "calls.txt"
    case = make_case(harness, ref={"log": str(log), "name": "t"}, cand={"log": str(log), "name": "m"})
    result = harness.run_case(case, quick_settings(harness))
    calls = log.read_text().split()
    # output() does not call run(); warm-up: 2 calls of each side, reference first; then one call per side per round
    assert calls[:4] == ["t", "t", "m", "m"]
    assert "".join(calls[4:]) == "tm" + "mt" + "tm" + "mt" + "tm"
    for side in ("torch", "mindram"):
        rounds = result["sides"][side]["rounds"]
        assert [r["round"] for r in rounds] == list(range(5))
        assert all(len(r["loadavg"]) == 3 and r["iters"] == 1 for r in rounds)
    assert result["max_abs_diff"] == 0.0
    assert result["flops_per_call"] == 2 * 8 ** 3


def test_summary_math_median_and_spread(harness):
    assert harness.spread([3.0, 1.0, 2.0, 10.0, 4.0]) == {"median": 3.0, "min": 1.0, "max": 10.0}
    assert harness.spread([1.0, 2.0, 3.0, 4.0]) == {"median": 2.5, "min": 1.0, "max": 4.0}
    rounds = [{"wall_s": w, "cpu_s": c, "iters": i} for w, c, i in [(1.0, 2.0, 2), (2.0, 2.0, 2), (0.5, 1.0, 2),
                                                                     (1.0, 1.0, 1), (4.0, 2.0, 2)]]
    summary = harness._side_summary(rounds, items=3, flops=1e9)
    assert summary["throughput"] == {"median": 3.0, "min": 1.5, "max": 12.0}   # 3 items × iters / wall
    assert summary["wall_s_per_call"] == {"median": 1.0, "min": 0.25, "max": 2.0}
    assert summary["cpu_s_per_call"] == {"median": 1.0, "min": 0.5, "max": 1.0}
    assert summary["cpu_utilisation"]["max"] == 2.0
    assert summary["gflops"] == {"median": 1.0, "min": 0.5, "max": 4.0}
    assert harness.round_order(["a", "b"], 0) == ["a", "b"] and harness.round_order(["a", "b"], 3) == ["b", "a"]


def test_ratio_is_candidate_over_reference_per_round(harness):
    case = make_case(harness, ref={"sleep_s": 0.03}, cand={"sleep_s": 0.01, "offset": 0.5})
    result = harness.run_case(case, quick_settings(harness))
    ref, cand = (result["sides"][s]["rounds"] for s in ("torch", "mindram"))
    expected = [(c["iters"] / c["wall_s"]) / (r["iters"] / r["wall_s"]) for r, c in zip(ref, cand)]
    assert result["ratio"]["per_round"] == pytest.approx(expected)
    assert result["ratio"]["median"] == pytest.approx(float(np.median(expected)))
    assert result["ratio"]["min"] <= result["ratio"]["median"] <= result["ratio"]["max"]
    assert 1.8 < result["ratio"]["median"] < 3.6   # 30 ms vs 10 ms per call (plus the tiny matmul)
    assert result["max_abs_diff"] == pytest.approx(0.5)


def test_each_side_counts_its_own_flops(harness):
    """A candidate that does less work than the reference (mindram's text tower skipping padding) gets GFLOP/s from
    its own count, not the reference's."""
    case = make_case(harness, cand={"flops_scale": 0.25})
    result = harness.run_case(case, quick_settings(harness))
    ref, cand = result["sides"]["torch"], result["sides"]["mindram"]
    assert result["flops_per_call"] == ref["flops_per_call"] == 2 * 8 ** 3
    assert cand["flops_per_call"] == 2 * 8 ** 3 // 4
    per_call = [r["wall_s"] / r["iters"] for r in cand["rounds"]]
    assert cand["gflops"]["median"] == pytest.approx(float(np.median([2 * 8 ** 3 / 4 / t / 1e9 for t in per_call])))


def test_clip_text_flops_formula_is_torchs_count():
    """The mindram text tower's FLOPs (positions it computes) by formula: at the full context, torch's own count of
    open_clip's encode_text."""
    torch = pytest.importorskip("torch")
    open_clip = pytest.importorskip("open_clip")
    import benchmark_clip

    import mindram
    ref = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    ids = torch.from_numpy(mindram.tokenize(["a cat", "a dog"])).long()
    with torch.no_grad():
        counted = bench_worker.count_torch_flops(lambda: ref.encode_text(ids))
    config = mindram.CLIPConfig.from_pretrained("clip_vit_b_32")
    assert benchmark_clip.text_tower_flops(config, 2, 77) == counted
    assert benchmark_clip.text_tower_flops(config, 2, 8) < counted / 8


@pytest.fixture(scope="module")
def document(harness):
    """A run of a good case and of one whose mindram side fails in setup."""
    settings = quick_settings(harness)
    started, machine = harness.now(), harness.machine_info()
    results = harness.run_cases([make_case(harness), make_case(harness, "broken", cand={"fail": "setup"})], settings)
    return harness.report(results, settings, "pytest", started, machine)


def test_json_document_schema_and_atomic_write(harness, document, tmp_path):
    path = tmp_path / "out" / "bench.json"
    harness.write_json(path, document)
    loaded = json.loads(path.read_text())
    assert loaded["schema"] == harness.SCHEMA and loaded["command"] == "pytest"
    assert {"cpu", "cpu_count", "usable_cpus", "python", "loadavg_start", "loadavg_end"} <= set(loaded["machine"])
    good, broken = loaded["cases"]
    assert broken == {"name": "broken", "unit": "img",
                      "error": "case 'broken': the mindram worker failed in 'setup': ValueError: bad size 8"}
    side = good["sides"]["mindram"]
    for key in ("throughput", "wall_s_per_call", "cpu_s_per_call", "gflops"):
        assert set(side[key]) == {"median", "min", "max"}
    assert side["peak_rss_mib"] > 1 and side["rss_mib"] > 1 and side["gemm_gflops"] > 0
    assert 1 < side["setup_peak_rss_mib"] <= side["peak_rss_mib"]
    assert side["run_peak_rss_mib"] is None or 1 < side["run_peak_rss_mib"] <= side["peak_rss_mib"] + 1
    assert side["versions"]["fake"] == "side" and side["framework"] == "numpy"
    peak = loaded["gemm_peak_gflops"]["machine"]
    assert peak == max(good["sides"][s]["gemm_gflops"] for s in ("torch", "mindram"))
    assert side["pct_of_gemm_peak"] == pytest.approx(100 * side["gflops"]["median"] / peak)
    assert [p.name for p in path.parent.iterdir()] == ["bench.json"]
    rows = harness.table_rows(loaded)
    assert rows[1] == ["broken", "failed: " + broken["error"]] and len(rows[0]) == len(harness.TABLE_HEADER)


def test_crashing_worker_gives_one_line_naming_the_case(harness):
    case = make_case(harness, "crashy case", cand={"fail": "run"})
    with pytest.raises(harness.BenchError) as error:
        harness.run_case(case, quick_settings(harness))
    message = str(error.value)
    assert message == "case 'crashy case': the mindram worker died during 'run' (exit 3): boom: simulated crash"
    assert "\n" not in message


def test_a_failed_case_is_retried(harness, tmp_path):
    case = make_case(harness, "flaky", cand={"fail": "setup once", "log": str(tmp_path / "flag")})
    assert "error" in harness.run_cases([case], quick_settings(harness), retries=0)[0]
    (tmp_path / "flag").unlink()
    [result] = harness.run_cases([case], quick_settings(harness), retries=1)
    assert "error" not in result and result["ratio"]["median"] > 0


def test_fewer_than_five_rounds_is_refused(harness):
    with pytest.raises(harness.BenchError, match="rounds=4: need at least 5"):
        harness.run_case(make_case(harness), quick_settings(harness, rounds=4))


def test_flop_count_matches_the_analytic_count():
    torch = pytest.importorskip("torch")
    batch, tokens, width, heads, inputs = 3, 5, 16, 2, 8
    proj = torch.nn.Linear(inputs, width)
    attn = torch.nn.MultiheadAttention(width, heads, batch_first=True).eval()
    x = torch.randn(batch, tokens, inputs)

    def forward():
        h = proj(x)
        return attn(h, h, h, need_weights=False)[0]

    linear = 2 * batch * tokens * inputs * width
    attention = (2 * batch * tokens * width * 3 * width       # q, k, v projections
                 + 2 * 2 * batch * tokens * tokens * width      # q·kᵀ and p·v over all heads
                 + 2 * batch * tokens * width * width)          # output projection
    with torch.no_grad():   # the fast path of nn.MultiheadAttention (not counted by torch itself) is switched off
        assert bench_worker.count_torch_flops(forward) == linear + attention
    assert torch.backends.mha.get_fastpath_enabled()

    def sdpa():
        q = torch.randn(batch, heads, tokens, width // heads)
        return torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)

    assert bench_worker.count_torch_flops(sdpa) == 2 * 2 * batch * heads * tokens * tokens * (width // heads)

    def train():
        proj(x.requires_grad_(True)).sum().backward()   # backward: the input and the weight gradients

    assert bench_worker.count_torch_flops(train) == 3 * linear


@pytest.mark.parametrize("framework", ["numpy", "mindspore", "onnxruntime"])
def test_gemm_peak_call_computes_the_product_in_each_framework(framework):
    if framework == "onnxruntime":
        pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((24, 24)).astype(np.float32) for _ in range(2))
    result = bench_worker._gemm_call(framework, 24)()
    result = result.asnumpy() if hasattr(result, "asnumpy") else np.asarray(result)
    np.testing.assert_allclose(result, a @ b, rtol=1e-5, atol=1e-4)
    assert bench_worker.gemm_gflops(framework, 24, 1) > 0


def test_clip_cases_measure_each_backend_against_open_clip():
    import benchmark_clip
    found = benchmark_clip.cases(["ViT-B-32"], ["text"], [1, 8], ["mindspore", "onnxruntime"])
    assert [c.name for c in found] == ["CLIP ViT-B-32 text bs1", "CLIP ViT-B-32 text bs1 onnxruntime",
                                       "CLIP ViT-B-32 text bs8", "CLIP ViT-B-32 text bs8 onnxruntime"]
    assert {c.reference.factory for c in found} == {"torch_tower"}
    assert [c.candidate.factory for c in found[:2]] == ["mindram_tower", "onnxruntime_tower"]
    assert len({c.candidate.name for c in found[:2]}) == 2   # the two backends log to different files


def test_load_cases_time_from_pretrained_against_open_clip_loading_the_same_file():
    import benchmark_all
    import benchmark_clip
    import benchmark_load
    found = benchmark_load.cases(["ViT-B-32", "ViT-L-14"])
    assert [c.name for c in found] == ["load CLIP ViT-B-32", "load CLIP ViT-L-14"]
    assert {(c.reference.factory, c.candidate.factory) for c in found} == {("torch_load", "mindram_load")}
    # open_clip's GELU architectures convert from the shapes (a bare clip_vit_l_14 means OpenAI's QuickGELU weights)
    import mindram
    assert benchmark_clip.catalog_name("ViT-L-14") is None
    assert mindram.CLIPConfig.from_pretrained("clip_vit_l_14").vision_config.hidden_act == "quick_gelu"
    quick = benchmark_clip.catalog_name("ViT-B-32-quickgelu")
    assert quick == "clip_vit_b_32_quickgelu"
    assert mindram.CLIPConfig.from_pretrained(quick).vision_config.hidden_act == "quick_gelu"
    planned, _ = benchmark_all.planned_cases(benchmark_all.parse_args(["--quick", "--groups", "load"]))
    assert [case.name for case, _ in planned] == ["load CLIP ViT-B-32"]
    planned, _ = benchmark_all.planned_cases(benchmark_all.parse_args(
        ["--groups", "clip", "--models", "ViT-B-32", "--batch_sizes", "1", "32", "--backends", "mindspore",
         "onnxruntime", "--match", "text", "--skip", "bs1 onnxruntime", "text_full bs32"]))
    assert [case.name for case, _ in planned] == [
        "CLIP ViT-B-32 text bs1", "CLIP ViT-B-32 text_full bs1", "CLIP ViT-B-32 text bs32",
        "CLIP ViT-B-32 text bs32 onnxruntime"]


def test_markdown_report_says_whether_the_machine_was_shared(document):
    import benchmark_all
    document = copy.deepcopy(document)
    cpus = document["machine"]["usable_cpus"]
    good = document["cases"][0]
    good["loadavg_1min"] = {"median": cpus + 2.0, "min": cpus, "max": cpus + 3.0}
    text = benchmark_all.markdown(document, {"ram": "no --reference_path given"})
    assert "**The machine was shared**" in text and f"up to {cpus + 3.0:.2f}, on {cpus} CPUs" in text
    assert "| fake | " in text and "| broken | failed: case 'broken'" in text
    assert "max\\|diff\\|" in text and "Skipped `ram`: no --reference_path given." in text
    assert "```\npytest\n```" in text
    good["loadavg_1min"] = {"median": 0.5, "min": 0.1, "max": cpus + 0.5}
    assert "The machine was quiet." in benchmark_all.markdown(document, {})


def test_an_interrupted_run_leaves_the_cases_measured_so_far(harness, document, tmp_path):
    import types

    import benchmark_all
    settings = quick_settings(harness)
    planned = [(make_case(harness, "fake"), settings), (make_case(harness, "later"), settings)]
    args = types.SimpleNamespace(output=str(tmp_path / "benchmarks.md"), json=str(tmp_path / "b.json"))
    benchmark_all.write_outputs(args, document["cases"][:1], planned, {}, "cmd", document["started"],
                                document["machine"])
    text = (tmp_path / "benchmarks.md").read_text()
    assert "| fake | " in text and "| later |" not in text
    assert "Not measured (the run stopped or was still going when this was written): later." in text
    assert json.loads((tmp_path / "b.json").read_text())["skipped"] == {"not yet run": "later"}


def test_setup_steps_run_in_a_child_process_and_report_its_error(tmp_path):
    """``run_in_child``: a worker's conversion/export step runs in its own process (its memory is not the
    workload's); a failure is one line naming the step and the child's error."""
    script = tmp_path / "steps.py"
    script.write_text("import os\n"
                      "def write(path, text):\n    open(path, 'w').write(f'{text} {os.getpid()}')\n"
                      "def fail(name):\n    raise ValueError(f'no weights for {name}')\n")
    bench_worker.run_in_child(script, "write", str(tmp_path / "out.txt"), "done")
    text, pid = (tmp_path / "out.txt").read_text().split()
    assert text == "done" and int(pid) != os.getpid()
    with pytest.raises(RuntimeError, match=r"steps.py: fail\('ViT-X',\) failed: ValueError: no weights for ViT-X"):
        bench_worker.run_in_child(script, "fail", "ViT-X")

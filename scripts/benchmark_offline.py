#!/usr/bin/env python
"""Offline-inference benchmark in the shape of the seed's table: per-tower throughput of MindSpore, ONNX Runtime on
the export and open_clip (torch CPU) at each batch size, with ratios; then top-10 search latency over N random
D-dim vectors with the default index (``mindram.embeddings.RetrievalIndex``: faiss IndexFlatIP when installed).

    python scripts/benchmark_offline.py [--model ViT-B-32] [--batch_sizes 1 4 8 16 32 64] [--repeats 3] \\
        [--export DIR] [--index_size 1000000] [--dim 512] [--queries 200] [--json results.json]

All three run the same weights (open_clip's random init of --model, seed 0, converted); the ONNX export is
written to a temporary folder unless --export names one (written there if it holds none). Throughput is
items/s from the median of --repeats timed calls after one warm-up call (MindSpore compiles there); ratios
are ONNX Runtime ÷ MindSpore and torch ÷ MindSpore (> 1: faster than MindSpore). --index_size 0 skips the
search part, --batch_sizes with no value skips the towers. Needs onnxruntime, torch and open_clip_torch.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_timing import timed  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mindram  # noqa: E402
from mindram.backends import load_backend  # noqa: E402
from mindram.embeddings import RetrievalIndex  # noqa: E402
from mindram.models.clip.convert import config_from_state_dict, convert_state_dict  # noqa: E402
from mindram.utils.cli import add_debug_flag, configure_logging, run_cli  # noqa: E402

BACKENDS = ("mindspore", "onnxruntime", "torch")


def build_models(name, export_dir):
    """``(mindram model, open_clip model, onnxruntime backend)`` with open_clip's seeded random weights."""
    import open_clip  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel
    torch.manual_seed(0)
    ref = open_clip.create_model(name, pretrained=None).eval()
    params = convert_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    model = mindram.CLIPModel(config_from_state_dict(params, hidden_act="quick_gelu" if "quickgelu" in name
                                                     else "gelu"))
    model.load_weights(params)
    model.set_train(False)
    if not (Path(export_dir) / "export.json").is_file():
        model.export(export_dir, formats="onnx", dynamic_batch=True, model_name=name)
    return model, ref, load_backend("onnxruntime", export_dir, verify=False)


def tower_inputs(model, batch, rng):
    size = model.image_size
    texts = [f"a photo of number {i} on a {c} background" for i, c in
             zip(range(batch), ["red", "green", "blue", "white"] * batch)]
    return {"image": rng.standard_normal((batch, 3, size, size)).astype(np.float32),
            "text": mindram.tokenize(texts)}


def tower_throughput(model, ref, backend, batch_sizes, repeats):
    """``[{tower, batch, mindspore, onnxruntime, torch (items/s), max_diff}]``."""
    import torch  # pylint: disable=import-outside-toplevel
    rng = np.random.default_rng(0)
    rows = []
    for batch in batch_sizes:
        inputs = tower_inputs(model, batch, rng)
        for tower in ("image", "text"):
            x = inputs[tower]
            ms_fn = model.get_image_features if tower == "image" else model.get_text_features
            ort_fn = backend.get_image_features if tower == "image" else backend.get_text_features
            torch_fn = ref.encode_image if tower == "image" else ref.encode_text
            torch_x = torch.from_numpy(x if tower == "image" else x.astype(np.int64))

            def run_torch(fn=torch_fn, arg=torch_x):
                with torch.no_grad():
                    return fn(arg).numpy()
            runners = {"mindspore": lambda f=ms_fn, arg=x: f(arg).asnumpy(),
                       "onnxruntime": lambda f=ort_fn, arg=x: f(arg), "torch": run_torch}
            row, outputs = {"tower": tower, "batch": batch}, {}
            for name, fn in runners.items():
                outputs[name] = fn()
                row[name] = batch / timed(fn, repeats)
            row["max_diff"] = float(max(np.abs(outputs[n] - outputs["mindspore"]).max() for n in outputs))
            rows.append(row)
            print(f"{tower:<6}{batch:>6}" + "".join(f"{row[n]:>12.1f}" for n in BACKENDS) +
                  f"{row['onnxruntime'] / row['mindspore']:>9.2f}{row['torch'] / row['mindspore']:>9.2f}"
                  f"{row['max_diff']:>11.1e}", flush=True)
    return rows


def random_unit_vectors(n, dim, seed=0, chunk=65536):
    """(n, dim) float32 random unit rows, generated in chunks (no float64 copy of the whole matrix)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        out[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def search_latency(index_size, dim, queries, k=10):
    """Top-k latency of single queries (ms: mean, p50, p95) and of one batch of ``queries``, with build time."""
    vectors = random_unit_vectors(index_size, dim)
    query_vectors = random_unit_vectors(queries, dim, seed=1)
    start = time.perf_counter()
    index = RetrievalIndex(vectors)
    build_s = time.perf_counter() - start
    index.search(query_vectors[:1], k)  # warm-up
    single = []
    for q in query_vectors:
        start = time.perf_counter()
        index.search(q[None], k)
        single.append(1000 * (time.perf_counter() - start))
    start = time.perf_counter()
    index.search(query_vectors, k)
    batch_ms = 1000 * (time.perf_counter() - start)
    return {"index_size": index_size, "dim": dim, "k": k, "backend": index.backend, "build_s": build_s,
            "queries": queries, "single_mean_ms": float(np.mean(single)),
            "single_p50_ms": float(np.percentile(single, 50)), "single_p95_ms": float(np.percentile(single, 95)),
            "batch_ms_per_query": batch_ms / queries}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture (random weights, seed 0)")
    parser.add_argument("--batch_sizes", type=int, nargs="*", default=[1, 4, 8, 16, 32, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--export", help="ONNX export folder to use (or to write); default a temporary one")
    parser.add_argument("--index_size", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", help="also write the results to this file")
    args = add_debug_flag(parser).parse_args(argv)
    if args.repeats <= 0 or any(b <= 0 for b in args.batch_sizes) or args.index_size < 0 or args.queries <= 0:
        parser.error("--repeats, --batch_sizes and --queries must be positive, --index_size >= 0")
    import torch  # pylint: disable=import-outside-toplevel
    results = {"model": args.model, "repeats": args.repeats, "torch_threads": torch.get_num_threads()}
    if args.batch_sizes:
        with tempfile.TemporaryDirectory(prefix="mindram-bench-") as tmp:
            model, ref, backend = build_models(args.model, args.export or Path(tmp) / "export")
            print(f"{args.model}, random weights; items/s, median of {args.repeats}; ratios vs MindSpore; "
                  f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
            print(f"{'tower':<6}{'batch':>6}" + "".join(f"{n:>12}" for n in BACKENDS) +
                  f"{'ort/ms':>9}{'torch/ms':>9}{'max|diff|':>11}")
            results["towers"] = tower_throughput(model, ref, backend, args.batch_sizes, args.repeats)
    if args.index_size:
        search = search_latency(args.index_size, args.dim, args.queries)
        results["search"] = search
        print(f"top-{search['k']} search over {search['index_size']:,} x {search['dim']} ({search['backend']}, "
              f"built in {search['build_s']:.1f} s): single query mean {search['single_mean_ms']:.1f} ms, "
              f"p50 {search['single_p50_ms']:.1f} ms, p95 {search['single_p95_ms']:.1f} ms; "
              f"batch of {search['queries']}: {search['batch_ms_per_query']:.2f} ms/query")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


def cli(argv=None):
    main(argv)


if __name__ == "__main__":
    configure_logging()
    sys.exit(run_cli(cli, prog="benchmark_offline.py"))

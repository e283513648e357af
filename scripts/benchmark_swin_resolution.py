#!/usr/bin/env python
"""Speed of RAM / RAM++ tagging at several input resolutions (docs/ram.md#input-resolution), one process.

    python scripts/benchmark_swin_resolution.py [--arch ram_plus_swin_l_384] [--sizes 224 384 448 512]
        [--batch_size 1] [--rounds 5] [--json FILE]

Builds the architecture with seeded random weights (speed does not depend on the values), compiles one graph per
size (the compile time is reported apart), then times ``get_tag_logits`` (Swin encoder + tagging head, graph mode)
in ``rounds`` rounds that visit every size once, in a rotated order, so that the load of a shared machine spreads
over all sizes; the load average is recorded per round. Per size: median and min wall seconds per call, images/s
at the median, the median CPU seconds per call (``time.process_time``, all threads: less disturbed by other
processes on a shared machine than wall time), and the encoder's GFLOPs per image counted from the layer shapes
(matmuls only, padded window tokens included) and the head's, figures no load can disturb. One graph of RAM++ Swin-L holds
about 6.5 GB at its peak: on a small machine run one size per process.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np


def encoder_gflops(config, size):
    """Multiply-adds × 2 of the Swin encoder's matmuls for one size × size image (padded window tokens counted)."""
    from mindram.models.swin.windows import window_plan

    rows = cols = size // config.patch_size
    flops = 2 * rows * cols * config.in_chans * config.patch_size ** 2 * config.embed_dim
    for stage in config.stages():
        dim, tokens = stage.dim, rows * cols
        for i in range(stage.depth):
            plan = window_plan(rows, cols, stage.window_size, bool(i % 2))
            padded = plan.padded[0] * plan.padded[1]
            flops += 2 * padded * 4 * dim * dim                          # qkv + proj on window tokens
            flops += 2 * 2 * padded * plan.window_tokens * dim           # q·k and attn·v
            flops += 2 * tokens * 2 * config.mlp_ratio * dim * dim       # MLP
        if stage.downsample:
            rows, cols = (rows + 1) // 2, (cols + 1) // 2
            flops += 2 * rows * cols * 4 * dim * 2 * dim
    return flops / 1e9


def head_gflops(config, tokens):
    """Multiply-adds × 2 of the tagging head's matmuls (image_proj, RAM++ reweighting, wordvec_proj, the
    cross-attention layers, fc) for one image with ``tokens`` encoder tokens."""
    head, tags, width = config.head_config, config.num_tags, config.label_embed_dim
    hidden, inner = head.hidden_size, head.intermediate_size
    macs = tokens * config.vision_width * width + tags * config.descriptions_per_tag * width
    macs += tags * width * hidden if hidden != width else 0
    per_layer = tags * hidden * hidden * 2 + tokens * width * hidden * 2 + 2 * tags * tokens * hidden
    per_layer += tags * hidden * inner * 2
    return 2 * (macs + head.num_hidden_layers * per_layer + tags * hidden) / 1e9


def main(argv=None):
    import mindram
    from mindram.models.ram import RAMConfig, model_class_for
    from mindram.utils.cli import add_debug_flag
    from mindram.utils.io import atomic_write

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ram_plus_swin_l_384", help="RAM / RAM++ architecture name")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 384, 448, 512])
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = add_debug_flag(parser).parse_args(argv)
    config = RAMConfig.from_pretrained(args.arch)
    for size in args.sizes:
        config.swin_config.check_input_size(size)
    np.random.seed(0)
    model = model_class_for(config)(config)
    model.set_train(False)
    pixels = {s: np.random.default_rng(s).standard_normal((args.batch_size, 3, s, s)).astype(np.float32)
              for s in args.sizes}
    compile_s, times, cpu, loads = {}, {s: [] for s in args.sizes}, {s: [] for s in args.sizes}, []
    for size in args.sizes:
        start = time.perf_counter()
        model.get_tag_logits(pixels[size])
        compile_s[size] = time.perf_counter() - start
        print(f"{size}: first call (compile) {compile_s[size]:.1f} s", flush=True)
    for r in range(args.rounds):
        loads.append(os.getloadavg()[0])
        order = args.sizes[r % len(args.sizes):] + args.sizes[:r % len(args.sizes)]
        for size in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            model.get_tag_logits(pixels[size])
            times[size].append(time.perf_counter() - start)
            cpu[size].append(time.process_time() - start_cpu)
    rows = []
    for size in args.sizes:
        median = statistics.median(times[size])
        rows.append(dict(size=size, tokens=1 + int(np.prod(config.swin_config.output_grid(size))),
                         median_s=round(median, 3), min_s=round(min(times[size]), 3),
                         images_per_s=round(args.batch_size / median, 3),
                         cpu_s=round(statistics.median(cpu[size]), 3), compile_s=round(compile_s[size], 1),
                         encoder_gflops=round(encoder_gflops(config.swin_config, size), 1)))
        rows[-1]["head_gflops"] = round(head_gflops(config, rows[-1]["tokens"]), 1)
    report = dict(arch=args.arch, batch_size=args.batch_size, rounds=args.rounds, load_average=loads,
                  cpu_count=os.cpu_count(), mindram=mindram.__version__, results=rows)
    print(f"{'size':>5} {'tokens':>6} {'median s':>9} {'min s':>7} {'img/s':>7} {'CPU s':>7} {'enc GFLOPs':>10} "
          f"{'head GFLOPs':>11} {'compile s':>9}")
    for row in rows:
        print(f"{row['size']:>5} {row['tokens']:>6} {row['median_s']:>9.3f} {row['min_s']:>7.3f} "
              f"{row['images_per_s']:>7.3f} {row['cpu_s']:>7.2f} {row['encoder_gflops']:>10.1f} "
              f"{row['head_gflops']:>11.1f} {row['compile_s']:>9.1f}")
    print(f"load average per round: {', '.join(f'{x:.1f}' for x in loads)} on {os.cpu_count()} CPUs")
    if args.json:
        with atomic_write(args.json) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    from mindram.utils.cli import configure_logging, run_cli
    configure_logging()
    sys.exit(run_cli(main, prog="benchmark_swin_resolution.py"))

#!/usr/bin/env python
"""Throughput of one CLIP training step, mindram's ``TrainStep`` (graph mode) vs open_clip + torch.optim.AdamW.

    python scripts/benchmark_train_step.py [--model ViT-B-32] [--batch_sizes 32] [--rounds 5] [--json FILE]

A step is: forward of both towers, the symmetric contrastive loss (open_clip's ``ClipLoss`` / mindram's
``CLIPWithLoss``), backward, gradient clipping to a global norm of 1, AdamW (lr 1e-5, betas 0.9/0.98, eps 1e-6,
weight decay 0.2 on the weights and none on norms, biases and ``logit_scale`` — each library's own rule), and the
clamp of ``logit_scale`` to ln(100). Both start from the same seeded random weights (open_clip's
``create_model(name, pretrained=None)``, converted for mindram) and train on the same in-memory batch (seeded
pixels, open_clip-tokenized captions), so a step never waits on data. The harness (``scripts/bench_harness.py``)
runs the two sides in interleaved rounds in their own processes; FLOPs are the matmul/convolution/attention
FLOPs of the forward and backward counted on the torch side (the optimizer's elementwise work is not counted).
The numerical check compares the loss of the first step (same weights, same batch).
"""
import argparse
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bench_worker import Workload, count_torch_flops  # noqa: E402
from benchmark_clip import (SEED, load_mindram_clip, mindspore_versions, torch_versions,  # noqa: E402
                            write_reference_model)

LEARNING_RATE = 1e-5
WEIGHT_DECAY = 0.2
MAX_GRAD_NORM = 1.0
LOGIT_SCALE_MAX = math.log(100)


def open_clip_param_groups(model):
    """open_clip's training rule: no weight decay on 1-D tensors, norms, biases and logit_scale."""
    def exclude(name, param):
        return param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if not exclude(n, p)], "weight_decay": WEIGHT_DECAY},
            {"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0}]


def torch_train_step(workdir, model, batch):
    """open_clip model + ``ClipLoss`` + ``torch.optim.AdamW`` + ``clip_grad_norm_`` + logit-scale clamp."""
    import open_clip
    import torch
    from open_clip.loss import ClipLoss
    torch.manual_seed(SEED)
    ref = open_clip.create_model(model, pretrained=None)
    pixels, ids = write_reference_model(ref, workdir, open_clip.get_tokenizer(model), batch)
    ref.train()
    images, texts = torch.from_numpy(pixels), torch.from_numpy(ids).long()
    loss_fn = ClipLoss()
    optimizer = torch.optim.AdamW(open_clip_param_groups(ref), lr=LEARNING_RATE, betas=(0.9, 0.98), eps=1e-6)

    def loss_and_backward():
        image_features, text_features, logit_scale = ref(images, texts)[:3]
        loss = loss_fn(image_features, text_features, logit_scale)
        loss.backward()
        return loss

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_and_backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        with torch.no_grad():
            ref.logit_scale.clamp_(0, LOGIT_SCALE_MAX)
        return float(loss.detach())

    def flops():
        count = count_torch_flops(loss_and_backward)
        optimizer.zero_grad(set_to_none=True)
        return count

    return Workload(step, batch, "torch", output=lambda: np.array([step()]), flops=flops,
                    versions=torch_versions(torch))


def mindram_train_step(workdir, model, batch):
    """mindram's ``TrainStep(CLIPWithLoss(model), AdamWeightDecay, max_grad_norm, clamp_max)`` in graph mode."""
    import mindspore as ms

    from mindram.losses import CLIPWithLoss
    from mindram.trainer.optim import AdamWeightDecay
    from mindram.trainer.train_step import TrainStep
    from mindram.utils.graph import run_in_graph_mode
    clip, inputs = load_mindram_clip(workdir, model)
    clip.set_train(True)
    optimizer = AdamWeightDecay(clip.trainable_params(), LEARNING_RATE, beta1=0.9, beta2=0.98, eps=1e-6,
                                weight_decay=WEIGHT_DECAY)
    train_step = TrainStep(CLIPWithLoss(clip), optimizer, max_grad_norm=MAX_GRAD_NORM, clamp_max=LOGIT_SCALE_MAX)
    train_step.set_train(True)
    images, texts = ms.Tensor(inputs["pixels"]), ms.Tensor(inputs["input_ids"])

    def step():
        return float(run_in_graph_mode(train_step, images, texts).asnumpy())

    return Workload(step, batch, "mindspore", output=lambda: np.array([step()]), versions=mindspore_versions())


def cases(models, batch_sizes):
    """One harness case per (model, batch size)."""
    from bench_harness import Case, Side
    module = str(Path(__file__).resolve())
    return [Case(f"CLIP {model} train step bs{batch}", "img",
                 Side("torch", module, "torch_train_step", dict(model=model, batch=batch)),
                 Side("mindram", module, "mindram_train_step", dict(model=model, batch=batch)))
            for model in models for batch in batch_sizes]


def main(argv=None):
    from bench_harness import add_run_arguments, run_and_report

    from mindram.utils.cli import add_debug_flag
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ViT-B-32"], help="open_clip architecture names")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[32])
    args = add_debug_flag(add_run_arguments(parser, rounds=5)).parse_args(argv)
    run_and_report(cases(args.models, args.batch_sizes), args, argv, "scripts/benchmark_train_step.py")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    from mindram.utils.cli import configure_logging, run_cli
    configure_logging()
    sys.exit(run_cli(main, prog="benchmark_train_step.py"))

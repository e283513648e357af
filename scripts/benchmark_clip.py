#!/usr/bin/env python
"""Throughput of mindram vs open_clip (torch CPU) for the CLIP image and text towers, same weights, same run.

    python scripts/benchmark_clip.py [--models ViT-B-32] [--towers image text] [--batch_sizes 1 8 32] \\
        [--backends mindspore onnxruntime] [--rounds 7] [--min_round_s 2] [--json FILE]

Each (model, tower, batch) is a case of ``bench_harness``: open_clip and mindram run in two worker processes,
in interleaved rounds (see ``scripts/bench_harness.py``). The open_clip side builds the model with seeded random
weights (``open_clip.create_model(name, pretrained=None)``) and writes them, and the inputs (seeded normal pixels;
captions tokenized by open_clip), into the case's folder; the mindram side converts the same weights
(``mindram.models.clip.convert.convert_file``, in a child process), loads them with ``CLIPModel.from_pretrained``
and times ``get_image_features`` / ``get_text_features`` (compiled graph).
With ``--backends ... onnxruntime`` each (model, tower, batch) is measured a second time with mindram's ONNX Runtime
backend as the candidate (case name ending in ``onnxruntime``): a child process converts the same weights and
exports them (``CLIPModel.export``, dynamic batch) into the case's folder, and the worker times
``mindram.backends.load_backend("onnxruntime", ...)``'s features on the same inputs (its peak RSS is that of
inference alone, the export's is the child's).
Prints images/s or texts/s of both, the ratio mindram ÷ torch (median [min–max] over rounds; > 1: mindram is
faster), GFLOP/s, % of the GEMM peak, peak RSS and the max-abs-diff of the features.
The torch side needs the test extra (torch, open_clip_torch).
"""
import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(HERE), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from bench_worker import Workload, count_torch_flops  # noqa: E402

SEED = 0
WEIGHTS, INPUTS = "weights.safetensors", "inputs.safetensors"
CAPTIONS = [f"a photo of a number {i} on a {colour} background"
            for i, colour in zip(range(64), ["red", "green", "blue", "white"] * 16)]
# tower "text" encodes CAPTIONS (13-14 tokens with SOT/EOT, a typical prompt); "text_full" captions that fill the
# whole 77-token context, where mindram's text tower cannot skip padding (text_config.trim_padding)
TOWERS = ("image", "text", "text_full")


def captions(batch, tower="text"):
    texts = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch)]
    return [" and ".join([text] * 8) for text in texts] if tower == "text_full" else texts


def write_reference_model(torch_model, workdir, tokenizer, batch, tower="text"):
    """Save ``torch_model``'s weights and the seeded inputs (pixels, token ids) for the other side."""
    import safetensors.numpy
    size = torch_model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    safetensors.numpy.save_file({k: v.detach().contiguous().numpy() for k, v in torch_model.state_dict().items()},
                                str(Path(workdir) / WEIGHTS))
    pixels = np.random.default_rng(SEED).standard_normal((batch, 3, size, size)).astype(np.float32)
    ids = tokenizer(captions(batch, tower)).numpy().astype(np.int32)
    safetensors.numpy.save_file({"pixels": pixels, "input_ids": ids}, str(Path(workdir) / INPUTS))
    return pixels, ids


def torch_versions(torch):
    import open_clip
    return {"torch": torch.__version__, "open_clip": open_clip.__version__, "torch_threads": torch.get_num_threads()}


def torch_tower(workdir, model, tower, batch):
    """open_clip's ``encode_image`` / ``encode_text`` on ``batch`` seeded inputs (the reference side)."""
    import open_clip
    import torch
    torch.manual_seed(SEED)
    ref = open_clip.create_model(model, pretrained=None).eval()
    pixels, ids = write_reference_model(ref, workdir, open_clip.get_tokenizer(model), batch, tower)
    encode, inputs = ((ref.encode_image, torch.from_numpy(pixels)) if tower == "image" else
                      (ref.encode_text, torch.from_numpy(ids).long()))

    def run():
        with torch.no_grad():
            return encode(inputs)

    return Workload(run, batch, "torch", output=lambda: run().numpy(), flops=lambda: count_torch_flops(run),
                    versions=torch_versions(torch))


MINDRAM_CHECKPOINT = "mindram/model.ckpt"


def convert_weights(workdir, model, source=WEIGHTS, target=MINDRAM_CHECKPOINT):
    """The reference side's weights (``<workdir>/<source>``) converted to a mindram checkpoint + config
    (``convert_file``) at ``<workdir>/<target>``, unless it is there."""
    from mindram.models.clip.convert import convert_file
    target = Path(workdir) / target
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        convert_file(str(Path(workdir) / source), str(target), model_name=catalog_name(model))


def catalog_name(model):
    """``convert_file``'s ``model_name`` for an open_clip architecture: mindram's architecture of a ``*-quickgelu``
    name (``ViT-B-32-quickgelu`` -> ``clip_vit_b_32_quickgelu``); None for the others, which convert as exact GELU
    from the shapes (a bare ``clip_vit_b_32`` would mean OpenAI's QuickGELU weights)."""
    return "clip_" + model.lower().replace("-", "_") if "quickgelu" in model.lower() else None


def load_mindram_clip(workdir, model):
    """``CLIPModel.from_pretrained`` of the reference side's weights, converted once by a child process (so that a
    worker's setup peak is that of loading, as a user's), and the inputs it wrote."""
    import safetensors.numpy

    import mindram
    from bench_worker import run_in_child
    if not (Path(workdir) / MINDRAM_CHECKPOINT).is_file():
        run_in_child(__file__, "convert_weights", str(workdir), model)
    clip = mindram.CLIPModel.from_pretrained(str(Path(workdir) / MINDRAM_CHECKPOINT))
    return clip, safetensors.numpy.load_file(str(Path(workdir) / INPUTS))


def mindspore_versions():
    import mindspore as ms

    import mindram
    return {"mindspore": ms.__version__, "mindram": getattr(mindram, "__version__", "?"),
            "device": ms.get_context("device_target")}


def tower_call(encoder, inputs, tower):
    """``(encoder's feature method of the tower, its input array)`` from the inputs the reference side wrote."""
    if tower == "image":
        return encoder.get_image_features, inputs["pixels"]
    return encoder.get_text_features, inputs["input_ids"]


def text_tower_flops(config, batch, length):
    """Matmul FLOPs (2 per multiply-add, as torch's counter) of the CLIP text tower over ``length`` positions: per
    layer the q/k/v, output and MLP projections and the attention's two batched products; the final projection
    of the pooled rows."""
    text = config.text_config
    width, hidden, rows = text.hidden_size, text.intermediate_size, batch * length
    layer = 2 * rows * width * (4 * width + 2 * hidden) + 2 * 2 * batch * length * length * width
    return text.num_hidden_layers * layer + 2 * batch * width * config.projection_dim


def mindram_tower(workdir, model, tower, batch):
    """mindram's ``get_image_features`` / ``get_text_features`` (compiled graph) on the same inputs. Its text
    tower runs the positions up to the last EOT token only (``trim_padding``); its FLOPs count those."""
    import mindspore as ms

    from mindram.models.clip.modeling import text_length
    clip, inputs = load_mindram_clip(workdir, model)
    clip.set_train(False)
    encode, array = tower_call(clip, inputs, tower)
    data = ms.Tensor(array)   # made once, as the torch side's
    flops = None
    if tower != "image":
        length = text_length(array) if clip.config.text_config.trim_padding else array.shape[1]
        flops = lambda: text_tower_flops(clip.config, batch, length)   # noqa: E731

    def run():
        return encode(data).asnumpy()

    return Workload(run, batch, "mindspore", output=run, flops=flops, versions=mindspore_versions())


EXPORT = "export"


def export_onnx(workdir, model):
    """Convert the reference side's weights and export them to ONNX (dynamic batch) in ``<workdir>/export``."""
    clip, _ = load_mindram_clip(workdir, model)
    clip.set_train(False)
    clip.export(str(Path(workdir) / EXPORT), formats="onnx", dynamic_batch=True, model_name=model)


def onnxruntime_tower(workdir, model, tower, batch):
    """mindram's ONNX Runtime backend on an export of the same weights (made by a child process, so that this
    worker's peak RSS is that of inference alone)."""
    import safetensors.numpy

    import onnxruntime

    from bench_worker import run_in_child
    from mindram.backends import load_backend
    run_in_child(__file__, "export_onnx", str(workdir), model)
    backend = load_backend("onnxruntime", str(Path(workdir) / EXPORT), verify=False)
    inputs = safetensors.numpy.load_file(str(Path(workdir) / INPUTS))
    encode, data = tower_call(backend, inputs, tower)

    def run():
        return encode(data)

    return Workload(run, batch, "onnxruntime", output=run, versions={"onnxruntime": onnxruntime.__version__})


CANDIDATES = {"mindspore": ("mindram", "mindram_tower", ""), "onnxruntime": ("mindram-ort", "onnxruntime_tower",
                                                                             " onnxruntime")}


def cases(models, towers, batch_sizes, backends=("mindspore",)):
    """One harness case per (model, batch size, tower, mindram backend)."""
    from bench_harness import Case, Side
    module = str(Path(__file__).resolve())
    return [Case(f"CLIP {model} {tower} bs{batch}{CANDIDATES[backend][2]}", "img" if tower == "image" else "text",
                 Side("torch", module, "torch_tower", dict(model=model, tower=tower, batch=batch)),
                 Side(CANDIDATES[backend][0], module, CANDIDATES[backend][1],
                      dict(model=model, tower=tower, batch=batch)))
            for model in models for batch in batch_sizes for tower in towers for backend in backends]


def main(argv=None):
    import bench_harness

    from mindram.utils.cli import add_debug_flag
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ViT-B-32"], help="open_clip architecture names")
    parser.add_argument("--towers", nargs="+", default=list(TOWERS), choices=TOWERS,
                        help="text: 13-14-token captions; text_full: captions filling the 77-token context")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--backends", nargs="+", default=["mindspore"], choices=sorted(CANDIDATES),
                        help="mindram backends measured against open_clip (onnxruntime: on an ONNX export)")
    args = add_debug_flag(bench_harness.add_run_arguments(parser)).parse_args(argv)
    bench_harness.run_and_report(cases(args.models, args.towers, args.batch_sizes, args.backends), args, argv,
                                 "scripts/benchmark_clip.py")


if __name__ == "__main__":
    from mindram.utils.cli import configure_logging, run_cli
    configure_logging()
    sys.exit(run_cli(main, prog="benchmark_clip.py"))

"""MindIR exports run on machines without mindram's C++ kernels: every CLIP tower and the RAM++ tagger (tiny
configs), with a fixed and with a dynamic batch, hold no ``ops.Custom`` op and no reference to the kernel library,
and a fresh process with the kernels disabled and an empty ``$MINDRAM_HOME`` loads and runs them, matching the
in-process model. Every class that creates a kernel primitive routes its kernel path through the one switch
(``kernel_input``, off inside ``exportable()``); the switch is restored on exit; a graph that still names the
library is refused before it is written."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

import mindram
from mindram.errors import ConfigError
from mindram.export.mindir import export_mindir
from mindram.layers.kernels import exportable, exporting, kernel_input
from mindram.layers.kernels import ops as kernel_ops
from mindram.layers.kernels.build import LIB_NAME
from tests.conftest import ROOT
from tests.unit.test_clip_model import tiny

TOL = 1e-4
BATCH = 2
# classes that create a kernel primitive but never reach an exported graph, and why
NOT_EXPORTED = {("mindram/trainer/train_step.py", "_StepBase"): "training steps: the square sum measures gradients"}

# run in a fresh interpreter: plain mindspore, no mindram; arguments: the folder with graphs.json and inputs.npz
FRESH_RUN = """
import json, sys
from pathlib import Path
import mindspore as ms, numpy as np
folder = Path(sys.argv[1])
inputs = np.load(folder / "inputs.npz")
outputs = {}
for key, (graph, feed) in json.loads((folder / "graphs.json").read_text()).items():
    outputs[key] = ms.nn.GraphCell(ms.load(graph))(ms.Tensor(inputs[feed])).asnumpy()
np.savez(folder / "outputs.npz", **outputs)
"""


def graph_ops(path):
    """The op types of a MindIR file (its primitives and the nodes of its graph and functions)."""
    from mindspore.train import mind_ir_pb2  # pylint: disable=import-outside-toplevel
    model = mind_ir_pb2.ModelProto()
    model.ParseFromString(Path(path).read_bytes())
    nodes = [*model.graph.node, *(n for f in model.functions for n in f.node)]
    return {p.op_type for p in model.primitives} | {n.op_type.split(":")[2] if n.op_type.startswith("REF::")
                                                      else n.op_type for n in nodes}


def assert_portable(path):
    ops = graph_ops(path)
    assert "Custom" not in ops and "MatMul" in ops, f"{path.name}: {sorted(ops)}"   # parsed: MatMul is there
    assert LIB_NAME.encode() not in path.read_bytes(), f"{path.name} names {LIB_NAME}"


def clip_case():
    model = mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32.laion2b_s34b_b79k")))
    rng = np.random.default_rng(0)
    size = model.config.vision_config.image_size
    feeds = {"image": rng.standard_normal((BATCH, 3, size, size)).astype(np.float32),
             "text": mindram.tokenize(["a red square", "two dogs"]).astype(np.int64)}
    model.set_train(False)
    references = {"image_encoder": ("image", model.get_image_features(feeds["image"]).asnumpy()),
                  "text_encoder": ("text", model.get_text_features(feeds["text"]).asnumpy())}
    return model, feeds, references


def tagger_case(model_type):
    import mindram.models.ram as ram  # pylint: disable=import-outside-toplevel
    from tests.fixtures.ram.loader import fixture_config  # pylint: disable=import-outside-toplevel
    model = (ram.RAMPlus if model_type == "ram_plus" else ram.RAM)(fixture_config(model_type))
    model.set_train(False)
    size = model.config.image_size
    feeds = {"image": np.random.default_rng(1).standard_normal((BATCH, 3, size, size)).astype(np.float32)}
    return model, feeds, {"tagger": ("image", np.asarray(model.get_tag_logits(feeds["image"])))}


CASES = {"clip": clip_case, "ram_plus": lambda: tagger_case("ram_plus")}


@pytest.fixture(scope="module", name="exports")
def fixture_exports(tmp_path_factory):
    """``(folder, {"<case>/<fixed|dynamic>/<graph>": (graph path, feed name, reference outputs)}, fresh process)``:
    every case exported with a fixed and with a dynamic batch after its reference outputs were computed in this
    process with the kernels (their compiled graphs must not leak into the exports), then every graph run by one
    fresh process with the kernels disabled and an empty $MINDRAM_HOME."""
    from mindram.layers import kernels  # pylint: disable=import-outside-toplevel
    if kernels.kernels_disabled() or kernels.kernel_library() is None:
        pytest.skip("C++ kernels unavailable (no compiler or disabled): nothing could leak into a graph")
    folder = tmp_path_factory.mktemp("portable")
    graphs, inputs = {}, {}
    for case, build in CASES.items():
        model, feeds, references = build()
        inputs.update({f"{case}/{feed}": array for feed, array in feeds.items()})
        for batch in ("fixed", "dynamic"):
            out = folder / case / batch
            manifest = model.export(out, formats="mindir", dynamic_batch=batch == "dynamic", batch_size=BATCH)
            assert sorted(manifest["graphs"]) == sorted(references)
            for name, (feed, expected) in references.items():
                path = out / manifest["graphs"][name]["files"]["mindir"]["path"]
                graphs[f"{case}/{batch}/{name}"] = (path, f"{case}/{feed}", expected)
    (folder / "graphs.json").write_text(json.dumps({k: (str(p), f) for k, (p, f, _) in graphs.items()}))
    np.savez(folder / "inputs.npz", **inputs)
    empty_home = folder / "empty_home"
    empty_home.mkdir()
    env = dict(os.environ, MINDRAM_DISABLE_KERNELS="1", MINDRAM_HOME=str(empty_home), GLOG_v="3")
    proc = subprocess.run([sys.executable, "-c", FRESH_RUN, str(folder)], cwd=str(folder), env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    return folder, graphs, proc


GRAPHS = [f"{case}/{batch}/{name}" for case, names in (("clip", ("image_encoder", "text_encoder")),
                                                        ("ram_plus", ("tagger",)))
          for batch in ("fixed", "dynamic") for name in names]


@pytest.mark.slow
@pytest.mark.parametrize("graph", GRAPHS)
def test_exports_hold_no_kernel_op(exports, graph):
    _, graphs, _ = exports
    assert sorted(graphs) == sorted(GRAPHS)
    assert_portable(graphs[graph][0])


@pytest.mark.slow
def test_a_fresh_process_without_kernels_runs_every_export(exports):
    folder, graphs, proc = exports
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs = np.load(folder / "outputs.npz")
    assert sorted(outputs.files) == sorted(graphs)
    for key, (_, _, expected) in graphs.items():
        assert outputs[key].shape == expected.shape, key
        assert np.abs(outputs[key] - expected).max() <= TOL, key
    assert not any((folder / "empty_home").iterdir())
    assert not exporting() and kernel_input(ms.Tensor(np.ones((2, 3), np.float32)))   # the switch is off again


def _kernel_classes():
    """``(file, class name, construct calls kernel_input)`` of every class in mindram/ that creates a kernel
    primitive (a ``*_primitive`` factory of mindram.layers.kernels.ops, or ``ops.Custom`` itself)."""
    factories = {name for name in dir(kernel_ops) if name.endswith("_primitive")} | {"Custom"}

    def called(node):
        return {n.func.id if isinstance(n.func, ast.Name) else n.func.attr for n in ast.walk(node)
                if isinstance(n, ast.Call) and isinstance(n.func, (ast.Name, ast.Attribute))}

    found = []
    for path in sorted((ROOT / "mindram").rglob("*.py")):
        for cls in (n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.ClassDef)):
            if called(cls) & factories:
                construct = [f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "construct"]
                found.append((path.relative_to(ROOT).as_posix(), cls.name,
                              bool(construct) and "kernel_input" in called(construct[0])))
    return found


def test_every_kernel_layer_reads_the_one_switch():
    found = _kernel_classes()
    names = {name for _, name, _ in found}
    assert {"GELU", "LayerNorm", "BiasAdd", "Permute", "MultiheadAttention", "WindowAttention"} <= names
    unswitched = [(path, name) for path, name, switched in found
                  if not switched and (path, name) not in NOT_EXPORTED]
    assert unswitched == [], ("these classes create a C++ kernel primitive but their construct does not gate it "
                              "with kernel_input (the exportable() switch)")


def test_switch_nests_and_is_restored_on_exit_and_on_error():
    x = ms.Tensor(np.ones((2, 3), np.float32))
    assert not exporting() and kernel_input(x)
    with exportable():
        with exportable():
            assert exporting() and not kernel_input(x)
        assert exporting() and not kernel_input(x)   # the outer block still holds
    assert not exporting() and kernel_input(x)
    with pytest.raises(RuntimeError, match="inside"):
        with exportable():
            raise RuntimeError("inside")
    assert not exporting() and kernel_input(x)


class _Unswitched(nn.Cell):
    """A kernel layer that forgot the switch: calls the GELU kernel whatever the input."""

    def __init__(self):
        super().__init__()
        self.kernel = kernel_ops.gelu_primitive()

    def construct(self, x):
        return self.kernel(x)


def test_a_graph_naming_the_kernel_library_is_not_written(tmp_path, kernel_lib):
    with pytest.raises(ConfigError, match=r"f\.mindir: .*MindramGelu.*not written"):
        export_mindir(_Unswitched(), [((2, 3), "float32")], tmp_path / "f.mindir")
    assert list(tmp_path.iterdir()) == []   # no graph, no temporary
    assert not exporting()

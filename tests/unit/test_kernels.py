"""C++ GELU / LayerNorm kernels: numerics, graph + PyNative, gradients, fallback, build cache, CPU only,
unwritable $MINDRAM_HOME and libraries that fail their self-test."""
import json
import logging
import math
import os
import subprocess
import shutil
import sys
import tempfile
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from mindram.layers import kernels
from mindram.layers.activation import GELU, get_activation
from mindram.layers.attention import MultiheadAttention
from mindram.layers.kernels import build
from mindram.layers.linear import Linear
from mindram.layers.norm import LayerNorm

REPO = Path(__file__).resolve().parents[2]
MODES = [pytest.param(ms.PYNATIVE_MODE, id="pynative"), pytest.param(ms.GRAPH_MODE, id="graph")]
WIDTHS = (32, 512, 768, 1024, 1280, 1664)



needs_kernels = pytest.mark.usefixtures("kernel_lib")   # tests/conftest.py


@pytest.fixture
def fresh_build(monkeypatch):
    """The kernel build state of a new process (nothing built or logged); the real one is restored after."""
    monkeypatch.delenv(build.DISABLE_ENV, raising=False)
    monkeypatch.setattr(build, "_state", build._new_state())  # pylint: disable=protected-access


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.name == build.__name__ and r.levelno == logging.WARNING]


def gelu64(x):
    """Exact erf GELU in float64."""
    erf = np.vectorize(math.erf, otypes=[np.float64])
    xd = np.asarray(x, np.float64)
    return 0.5 * xd * (1.0 + erf(xd / math.sqrt(2.0)))


def layer_norm64(x, w, b, eps=1e-5):
    """LayerNorm over the last axis in float64."""
    xd = np.asarray(x, np.float64)
    mean, var = xd.mean(-1, keepdims=True), xd.var(-1, keepdims=True)
    return (xd - mean) / np.sqrt(var + eps) * w + b


def make_layer_norm(width, use_kernel=True, seed=0):
    """LayerNorm with random affine parameters, optionally forced onto the built-in path."""
    rng = np.random.default_rng(seed)
    ln = LayerNorm(width)
    ln.weight.set_data(ms.Tensor(rng.standard_normal(width).astype(np.float32)))
    ln.bias.set_data(ms.Tensor(rng.standard_normal(width).astype(np.float32)))
    if not use_kernel:
        ln.use_kernel = False
    return ln


class Loss(nn.Cell):
    """sum(net(x) * dy): its gradient w.r.t. net's output is dy."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def construct(self, x, dy):
        return (self.net(x) * dy).sum()


class TransposeThen(nn.Cell):
    """Apply ``net`` to x.transpose(1, 0, 2): a non-contiguous input inside the graph."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def construct(self, x):
        return self.net(x.transpose(1, 0, 2))


@needs_kernels
@pytest.mark.parametrize("mode", MODES, indirect=True)
def test_gelu_kernel_matches_float64_and_torch(mode):
    torch = pytest.importorskip("torch")
    x = np.concatenate([np.linspace(-10, 10, 400_001, dtype=np.float32),
                        np.array([-3e38, -1e30, -87.5, -40, -1e-30, -1e-42, 0.0, 1e-42, 40, 1e30,
                                  3e38], np.float32)])
    cell = GELU()
    assert cell.use_kernel
    y = cell(ms.Tensor(x)).asnumpy()
    assert np.abs(y - gelu64(x)).max() <= 5e-7
    y_torch = torch.nn.functional.gelu(torch.from_numpy(x[:400_001])).numpy()  # torch: inf at 3e38
    assert np.abs(y[:400_001] - y_torch).max() <= 1.5e-6
    special = cell(ms.Tensor(np.array([np.nan, np.inf, -np.inf, -0.0], np.float32))).asnumpy()
    assert np.isnan(special[0]) and special[1] == np.inf and special[2] == 0.0 and special[3] == 0.0


@needs_kernels
@pytest.mark.parametrize("mode", MODES, indirect=True)
def test_layer_norm_kernel_matches_float64_and_torch(mode):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    for width, shape in zip(WIDTHS, [(3, 5), (2, 7), (4, 1), (1, 3), (5,), (2, 2)]):
        x = (rng.standard_normal((*shape, width)) * 3 + 1.5).astype(np.float32)
        ln = make_layer_norm(width, seed=width)
        assert ln.use_kernel
        w, b = ln.weight.asnumpy(), ln.bias.asnumpy()
        y = ln(ms.Tensor(x)).asnumpy()
        assert np.abs(y - layer_norm64(x, w, b)).max() <= 2e-6, width
        yt = torch.nn.functional.layer_norm(torch.from_numpy(x), (width,), torch.from_numpy(w),
                                            torch.from_numpy(b), 1e-5).numpy()
        assert np.abs(y - yt).max() <= 4e-6, width


@needs_kernels
@pytest.mark.parametrize("mode", MODES, indirect=True)
def test_kernels_on_non_contiguous_input(mode):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 4, 768)).astype(np.float32) * 2
    ln = make_layer_norm(768)
    xt = x.transpose(1, 0, 2)
    y = TransposeThen(ln)(ms.Tensor(x)).asnumpy()
    assert np.abs(y - layer_norm64(xt, ln.weight.asnumpy(), ln.bias.asnumpy())).max() <= 2e-6
    assert np.abs(TransposeThen(GELU())(ms.Tensor(x)).asnumpy() - gelu64(xt)).max() <= 5e-7
    if mode == ms.PYNATIVE_MODE:  # a view tensor handed to the kernel directly
        view = ms.Tensor(x).transpose(1, 0, 2)
        assert np.abs(GELU()(view).asnumpy() - gelu64(xt)).max() <= 5e-7


@needs_kernels
@pytest.mark.parametrize("mode", MODES, indirect=True)
def test_gradients_equal_builtin(mode):
    rng = np.random.default_rng(3)
    x = ms.Tensor(rng.standard_normal((3, 5, 64)).astype(np.float32) * 3)
    dy = ms.Tensor(rng.standard_normal((3, 5, 64)).astype(np.float32))
    grads = []
    for use_kernel in (True, False):
        ln = make_layer_norm(64, use_kernel)
        gx, (gw, gb) = ms.grad(Loss(ln), grad_position=0, weights=ln.trainable_params())(x, dy)
        grads.append([g.asnumpy() for g in (gx, gw, gb)])
    for kernel_grad, builtin_grad in zip(*grads):
        assert np.abs(kernel_grad - builtin_grad).max() <= 1e-5
    gelu_k, gelu_b = GELU(), GELU()
    gelu_b.use_kernel = False
    gk, gb_ = (ms.grad(Loss(cell))(x, dy).asnumpy() for cell in (gelu_k, gelu_b))
    assert np.abs(gk - gb_).max() <= 1e-5


def gelu_grad64(x, dy):
    """dy * dGELU/dx in float64."""
    erf = np.vectorize(math.erf, otypes=[np.float64])
    xd = np.asarray(x, np.float64)
    return dy * (0.5 * (1.0 + erf(xd / math.sqrt(2.0))) + xd * np.exp(-0.5 * xd * xd) / math.sqrt(2.0 * math.pi))


def layer_norm_grads64(x, w, dy, eps=1e-5):
    """(dx, dweight, dbias) of LayerNorm over the last axis in float64."""
    xd, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    rstd = 1.0 / np.sqrt(xd.var(-1, keepdims=True) + eps)
    xhat = (xd - xd.mean(-1, keepdims=True)) * rstd
    g = dy * w
    dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    rows = (-1, xd.shape[-1])
    return dx, (dy * xhat).reshape(rows).sum(0), dy.reshape(rows).sum(0)


@needs_kernels
@pytest.mark.parametrize("mode", MODES, indirect=True)
@pytest.mark.parametrize("width", (32, 768, 3072))
def test_gradient_kernels_match_float64(mode, width, monkeypatch):
    """The C++ backward kernels (the default) against the analytic gradients in float64, on enough rows that the
    kernels split the work over threads; also with the built-in-op backward passes (MINDRAM_BUILTIN_KERNEL_GRADS)."""
    rng = np.random.default_rng(width)
    x = (rng.standard_normal((4, 50, width)) * 3 + 0.5).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    for builtin in ("0", "1"):
        monkeypatch.setenv("MINDRAM_BUILTIN_KERNEL_GRADS", builtin)
        gelu = GELU()
        assert gelu.use_kernel
        got = ms.grad(Loss(gelu))(ms.Tensor(x), ms.Tensor(dy)).asnumpy()
        assert np.abs(got - gelu_grad64(x, dy)).max() <= 2e-6 * max(1.0, np.abs(dy).max())
        ln = make_layer_norm(width)
        gx, (gw, gb) = ms.grad(Loss(ln), grad_position=0, weights=ln.trainable_params())(ms.Tensor(x), ms.Tensor(dy))
        ref_x, ref_w, ref_b = layer_norm_grads64(x, ln.weight.asnumpy(), dy)
        assert np.abs(gx.asnumpy() - ref_x).max() <= 1e-5 * np.abs(ref_x).max()
        assert np.abs(gw.asnumpy() - ref_w).max() <= 1e-5 * np.abs(ref_w).max()
        assert np.abs(gb.asnumpy() - ref_b).max() <= 1e-5 * np.abs(ref_b).max()


@needs_kernels
@pytest.mark.parametrize("mode", MODES, indirect=True)
def test_bias_add_kernel_and_its_gradient(mode):
    """Linear's bias add as the kernel pair: forward equal to ops.BiasAdd, gradients equal to the built-in path and
    the bias gradient within float32 rounding of the float64 row sum."""
    rng = np.random.default_rng(5)
    x = ms.Tensor(rng.standard_normal((4, 300, 64)).astype(np.float32))
    dy = rng.standard_normal((4, 300, 96)).astype(np.float32)
    results = []
    for use_kernel in (True, False):
        linear = Linear(64, 96)
        linear.weight.set_data(ms.Tensor(rng.standard_normal((96, 64)).astype(np.float32) if not results else
                                         results[0][3]))
        linear.bias.set_data(ms.Tensor(np.linspace(-1, 1, 96, dtype=np.float32)))
        assert linear.bias_add.use_kernel
        linear.bias_add.use_kernel = use_kernel
        gx, (gw, gb) = ms.grad(Loss(linear), grad_position=0, weights=linear.trainable_params())(x, ms.Tensor(dy))
        results.append((linear(x).asnumpy(), gx.asnumpy(), gw.asnumpy(), linear.weight.asnumpy(), gb.asnumpy()))
    (y_k, gx_k, gw_k, _, gb_k), (y_b, gx_b, gw_b, _, gb_b) = results
    np.testing.assert_array_equal(y_k, y_b)
    np.testing.assert_array_equal(gx_k, gx_b)
    np.testing.assert_array_equal(gw_k, gw_b)
    ref = dy.astype(np.float64).reshape(-1, 96).sum(0)
    assert np.abs(gb_k - ref).max() <= 1e-6 * np.abs(dy).sum(axis=(0, 1)).max()
    assert np.abs(gb_k - gb_b).max() <= 1e-6 * np.abs(dy).sum(axis=(0, 1)).max()   # float32 row sums (built-in)


@needs_kernels
@pytest.mark.parametrize("mode", MODES, indirect=True)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("length, heads, width", [(50, 12, 768), (19, 3, 60), (1, 2, 8)])
def test_fused_attention_kernel_matches_float64_and_the_op_by_op_path(mode, causal, length, heads, width):
    """MultiheadAttention's fused kernel (packed q/k/v -> merged heads) against a float64 reference and against
    the split / transpose / softmax path it replaces; its gradient kernel against that path's gradients."""
    rng = np.random.default_rng(7)
    x = ms.Tensor(rng.standard_normal((3, length, width)).astype(np.float32))
    attn = MultiheadAttention(width, heads, causal=causal)
    attn.in_proj_bias.set_data(ms.Tensor(rng.standard_normal(3 * width).astype(np.float32)))
    mask = ms.Tensor(np.triu(np.full((length, length), -np.inf, np.float32), 1)) if causal else None
    assert attn.use_fused
    calls = []
    fused = attn.fused

    def spy(*args):
        calls.append(args[0].shape)
        return fused(*args)

    attn.fused = spy if mode == ms.PYNATIVE_MODE else fused
    attn.set_train(False)
    got = attn(x, mask).asnumpy()
    qkv = x.asnumpy().reshape(-1, width) @ attn.in_proj_weight.asnumpy().T + attn.in_proj_bias.asnumpy()
    core = build.attention_reference(qkv.reshape(3, length, 3 * width), heads, causal, np)
    out_w, out_b = attn.out_proj.weight.asnumpy().astype(np.float64), attn.out_proj.bias.asnumpy()
    assert np.abs(got - (core @ out_w.T + out_b)).max() <= 1e-5
    attn.fused = fused
    attn.use_fused = False
    assert np.abs(got - attn(x, mask).asnumpy()).max() <= 1e-5
    if mode == ms.PYNATIVE_MODE:
        assert calls == [(3, length, 3 * width)]
    attn.set_train(True)
    grads, calls = [], []
    for use_fused in (True, False):
        attn.use_fused = use_fused
        attn.fused = spy if mode == ms.PYNATIVE_MODE else fused
        loss = _AttentionLoss(attn, mask)
        input_grad, weight_grads = ms.grad(loss, grad_position=0, weights=attn.trainable_params())(x)
        grads.append([input_grad.asnumpy()] + [g.asnumpy() for g in weight_grads])
    if mode == ms.PYNATIVE_MODE:
        assert calls == [(3, length, 3 * width)]   # the fused path ran (and was differentiated) once
    for fused_grad, plain_grad in zip(*grads):
        assert np.abs(fused_grad - plain_grad).max() <= 1e-4 * max(1.0, np.abs(plain_grad).max())


class _AttentionLoss(nn.Cell):
    def __init__(self, attn, mask):
        super().__init__()
        self.attn, self.mask = attn, mask

    def construct(self, x):
        return (self.attn(x, self.mask) ** 2).sum()


@needs_kernels
def test_gelu_gradient_kernel_limits():
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 40.0, -40.0, 3e38, -3e38], np.float32)
    got = ms.grad(Loss(GELU()))(ms.Tensor(x), ms.Tensor(np.ones_like(x))).asnumpy()
    np.testing.assert_array_equal(got[[0, 1, 5, 6, 7, 8]], [1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    assert np.isnan(got[2]) and got[3] == 0.5 and got[4] == 0.5


@needs_kernels
def test_non_float32_and_dynamic_shape_use_builtin_ops():
    x = np.linspace(-4, 4, 96, dtype=np.float32).reshape(2, 3, 16)
    y16 = GELU()(ms.Tensor(x, ms.float16)).asnumpy().astype(np.float64)
    assert np.abs(y16 - gelu64(x)).max() <= 5e-3
    ln = make_layer_norm(16)
    ref = layer_norm64(x, ln.weight.asnumpy(), ln.bias.asnumpy())
    assert np.abs(ln(ms.Tensor(x, ms.float16)).asnumpy() - ref).max() <= 2e-2
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        for cell, expected in ((GELU(), gelu64(x)), (ln, ref)):
            cell.set_inputs(ms.Tensor(shape=[None, 3, 16], dtype=ms.float32))
            assert np.abs(cell(ms.Tensor(x)).asnumpy() - expected).max() <= 2e-6
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


def test_disabled_kernels_fall_back_with_same_numbers(monkeypatch, caplog):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 3, 768)).astype(np.float32) * 3
    kernel_ln, kernel_gelu = make_layer_norm(768), GELU()
    monkeypatch.setenv(build.DISABLE_ENV, "1")
    monkeypatch.setitem(build._state, "logged", set())  # pylint: disable=protected-access
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=build.__name__):
        fallback_ln, fallback_gelu = make_layer_norm(768), get_activation("gelu")
    assert not fallback_ln.use_kernel and not fallback_gelu.use_kernel
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert np.abs(fallback_gelu(ms.Tensor(x)).asnumpy() - gelu64(x)).max() <= 1e-6
    ref = layer_norm64(x, fallback_ln.weight.asnumpy(), fallback_ln.bias.asnumpy())
    assert np.abs(fallback_ln(ms.Tensor(x)).asnumpy() - ref).max() <= 4e-6
    if kernel_ln.use_kernel:
        assert np.abs(fallback_ln(ms.Tensor(x)).asnumpy()
                      - kernel_ln(ms.Tensor(x)).asnumpy()).max() <= 4e-6
        assert np.abs(fallback_gelu(ms.Tensor(x)).asnumpy()
                      - kernel_gelu(ms.Tensor(x)).asnumpy()).max() <= 1e-6
    assert sorted(p.name for p in fallback_ln.get_parameters()) == ["bias", "weight"]


def test_missing_compiler_falls_back(monkeypatch, tmp_path, caplog, fresh_build):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("MINDRAM_HOME", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger=build.__name__):
        assert build.kernel_library() is None
        assert build.kernel_library() is None
        assert kernels.gelu_primitive() is None and not GELU().use_kernel
    warnings = warnings_of(caplog)
    assert len(warnings) == 1 and "no C++ compiler" in warnings[0]


@needs_kernels
def test_kernels_are_used_only_on_cpu_device_target(monkeypatch, caplog, fresh_build):
    real_get_context = ms.get_context
    monkeypatch.setattr(ms, "get_context", lambda key: "GPU" if key == "device_target" else real_get_context(key))
    with caplog.at_level(logging.INFO, logger=build.__name__):
        assert kernels.gelu_primitive() is None and kernels.layer_norm_primitive(1e-5) is None
        assert not GELU().use_kernel and not LayerNorm(8).use_kernel
    notes = [r.getMessage() for r in caplog.records if r.name == build.__name__]
    assert len(notes) == 1 and "device_target is 'GPU'" in notes[0] and "CPU-only" in notes[0]
    monkeypatch.setattr(ms, "get_context", real_get_context)
    assert ms.get_context("device_target") == "CPU" and GELU().use_kernel and LayerNorm(8).use_kernel


def unwritable_home(tmp_path):
    """A $MINDRAM_HOME that cannot be created or written: a read-only folder, or (when chmod does not stop
    this user, e.g. root) a path below a regular file."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except OSError:
        return folder / "home"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return blocker / "home"


@needs_kernels
def test_unwritable_home_builds_in_a_private_temp_dir(monkeypatch, tmp_path, caplog, fresh_build):
    home = unwritable_home(tmp_path)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("MINDRAM_HOME", str(home))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    private = tmp_path / "tmp" / f"mindram-kernels-{os.getuid()}"
    with caplog.at_level(logging.WARNING, logger=build.__name__):
        lib = Path(build.kernel_library())
        assert build.kernel_library() == str(lib) and GELU().use_kernel and LayerNorm(8).use_kernel
    assert lib.parent.parent == private and lib.name == build.LIB_NAME and lib.is_file()
    assert (private.stat().st_mode & 0o777) == 0o700 and not home.exists()
    warnings = warnings_of(caplog)
    assert len(warnings) == 1 and f"$MINDRAM_HOME {home} is not writable" in warnings[0] and str(private) in warnings[0]
    build.reset()  # a new process finds the library there
    assert build.build_info() == {"path": str(lib), "compiled": False}


def test_temp_dir_writable_by_others_is_refused(monkeypatch, tmp_path):
    (tmp_path / f"mindram-kernels-{os.getuid()}").mkdir(mode=0o777)
    (tmp_path / f"mindram-kernels-{os.getuid()}").chmod(0o777)  # writable by others: could hold a planted library
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(RuntimeError, match="is not a private directory of this user"):
        build.private_temp_dir()


def write_fake_compiler(folder):
    """A $CXX that reports a version and writes a file that is not a shared library as its output."""
    cxx = folder / "fake-g++"
    cxx.write_text('#!/bin/sh\nif [ "$1" = --version ]; then echo "fake g++ 1.0"; exit 0; fi\n'
                   'for last; do :; done\nprintf "not a shared library" > "$last"\n')
    cxx.chmod(0o755)
    return cxx


def test_library_failing_its_self_test_is_deleted_and_not_retried(monkeypatch, tmp_path, caplog, fresh_build):
    monkeypatch.setenv("CXX", str(write_fake_compiler(tmp_path)))
    monkeypatch.setenv("MINDRAM_HOME", str(tmp_path / "home"))
    with caplog.at_level(logging.WARNING, logger=build.__name__):
        assert build.kernel_library() is None and build.kernel_library() is None
    folder = tmp_path / "home" / "kernels" / build.cache_key(os.environ["CXX"])
    assert not (folder / build.LIB_NAME).exists(), "the rejected library is deleted"
    assert (folder / build.FAILED_NOTE).is_file()
    warnings = warnings_of(caplog)
    assert len(warnings) == 1 and "failed its self-test and was deleted" in warnings[0]
    # a new process: the note makes it fall back at once, without compiling or loading anything
    build.reset()
    caplog.clear()

    def must_not_run(*args):
        raise AssertionError(f"rebuilt or reloaded a rejected library: {args}")

    monkeypatch.setattr(build, "_compile", must_not_run)
    monkeypatch.setattr(build, "self_test", must_not_run)
    with caplog.at_level(logging.WARNING, logger=build.__name__):
        assert build.kernel_library() is None
    warnings = warnings_of(caplog)
    assert len(warnings) == 1 and "failed its self-test before" in warnings[0]
    assert f"delete {folder / build.FAILED_NOTE} to retry" in warnings[0]


_PROBE = ("import json; from mindram.layers.kernels import build; "
          "print(json.dumps(build.build_info()))")


def _probe(home):
    env = dict(os.environ, MINDRAM_HOME=str(home), PYTHONPATH=str(REPO))
    env.pop(build.DISABLE_ENV, None)
    return subprocess.Popen([sys.executable, "-c", _PROBE], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _result(proc):
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


@needs_kernels
def test_build_cache_is_reused_across_processes(tmp_path):
    first = [_result(p) for p in [_probe(tmp_path), _probe(tmp_path)]]  # concurrent cold builds
    assert all(r["path"] for r in first) and first[0]["path"] == first[1]["path"]
    assert any(r["compiled"] for r in first)
    lib = Path(first[0]["path"])
    assert lib.parent.parent == tmp_path / "kernels" and lib.is_file()
    mtime = lib.stat().st_mtime_ns
    second = _result(_probe(tmp_path))
    assert second == {"path": str(lib), "compiled": False}
    assert lib.stat().st_mtime_ns == mtime
    assert [p.name for p in lib.parent.iterdir()] == [build.LIB_NAME]  # no temporaries left


def test_a_removed_library_is_built_again(monkeypatch, tmp_path, fresh_build):
    """The library of a $MINDRAM_HOME that was removed (a temporary home) is not handed out again."""
    if build.kernels_disabled() or not shutil.which(os.environ.get("CXX", "g++")):
        pytest.skip("no C++ compiler")
    monkeypatch.setenv("MINDRAM_HOME", str(tmp_path / "first"))
    first = build.kernel_library()
    assert first is not None and Path(first).is_file()
    shutil.rmtree(tmp_path / "first")
    monkeypatch.setenv("MINDRAM_HOME", str(tmp_path / "second"))
    second = build.kernel_library()
    assert second is not None and Path(second).is_file() and second.startswith(str(tmp_path / "second"))

"""Tests of the torch-free checkpoint reader (mindram.checkpoint.torch_reader)."""
import os
import pickle
import pickletools
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mindram.checkpoint.torch_reader import (  # noqa: E402
    ScriptObject,
    load_safetensors,
    load_torch_object,
    load_torch_state_dict,
)
from mindram.errors import CheckpointError, UnsafeCheckpointError  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
DTYPES = [torch.float32, torch.float16, torch.float64, torch.bfloat16, torch.int64, torch.int32, torch.int16,
          torch.int8, torch.uint8, torch.bool]
FORMATS = ["zip", "legacy"]

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


def _save(obj, path, fmt="zip"):
    torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"))
    return path


def _expected(t):
    """numpy value the reader must return for torch tensor ``t`` (bf16 -> float32)."""
    t = t.detach()
    return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()


def _assert_same(arr, t):
    exp = _expected(t)
    assert isinstance(arr, np.ndarray)
    assert arr.dtype == exp.dtype and arr.shape == exp.shape
    assert arr.flags.c_contiguous and arr.flags.writeable
    np.testing.assert_array_equal(arr, exp)


def _sample(dtype):
    values = torch.arange(-6, 18, dtype=torch.float64).reshape(4, 6) * 1.25
    if dtype == torch.bool:
        return values > 3
    if dtype == torch.uint8:
        return values.abs().to(dtype)
    return values.to(dtype)


# ----------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dtype_round_trip(tmp_path, fmt, dtype):
    t = _sample(dtype)
    sd = load_torch_state_dict(_save({"w": t, "v": t[1]}, tmp_path / "ckpt.pt", fmt))
    _assert_same(sd["w"], t)
    _assert_same(sd["v"], t[1])
    if dtype == torch.float16:
        assert sd["w"].dtype == np.float16  # fp16 is kept, the caller casts
    if dtype == torch.bfloat16:
        assert sd["w"].dtype == np.float32


@pytest.mark.parametrize("fmt", FORMATS)
def test_views_sharing_one_storage(tmp_path, fmt):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {"base": base, "t": base.t(), "slice": base[1:3, ::2], "row": base[2], "col": base[:, 5],
               "expanded": torch.arange(3.0).expand(4, 3), "param": torch.nn.Parameter(base[1:, 1:].clone())}
    sd = load_torch_state_dict(_save(tensors, tmp_path / "views.pt", fmt))
    assert list(sd) == list(tensors)
    for name, t in tensors.items():
        _assert_same(sd[name], t)
    sd["t"][0, 0] = -1.0  # every output owns its memory
    assert sd["base"][0, 0] == 0.0 and sd["slice"][0, 0] == 6.0


@pytest.mark.parametrize("fmt", FORMATS)
def test_scalars_and_empty_tensors(tmp_path, fmt):
    tensors = {"scalar": torch.tensor(3.5), "int_scalar": torch.tensor(7), "bf16_scalar": torch.tensor(2.5).bfloat16(),
               "empty": torch.zeros(0, 5), "empty1d": torch.empty(0, dtype=torch.int64),
               "sliced_empty": torch.arange(10.0)[5:5]}
    sd = load_torch_state_dict(_save(tensors, tmp_path / "small.pt", fmt))
    for name, t in tensors.items():
        _assert_same(sd[name], t)
    assert sd["scalar"].shape == () and isinstance(sd["scalar"], np.ndarray)


def test_module_state_dict_and_object_tree(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    obj = {"epoch": 3, "name": "run", "state_dict": model.state_dict(), "lst": [1, (2.5, "x")],
           "od": OrderedDict(b=torch.ones(2))}
    tree = load_torch_object(_save(obj, tmp_path / "tree.pt"))
    assert tree["epoch"] == 3 and tree["name"] == "run" and tree["lst"] == [1, (2.5, "x")]
    assert isinstance(tree["od"], OrderedDict) and isinstance(tree["od"]["b"], np.ndarray)
    assert isinstance(tree["state_dict"], OrderedDict)
    ref = model.state_dict()
    assert list(tree["state_dict"]) == list(ref)
    for name, t in ref.items():
        _assert_same(tree["state_dict"][name], t)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("wrapper", ["state_dict", "model", "nested"])
def test_wrappers_and_module_prefix(tmp_path, fmt, wrapper):
    inner = {"module.a.weight": torch.ones(2, 2), "module.b": torch.arange(3), "module.step": 5}
    if wrapper == "nested":
        obj = {"epoch": 1, "model": {"state_dict": inner}}
    else:
        obj = {"epoch": 1, "optimizer": {"lr": 0.1}, wrapper: inner}
    sd = load_torch_state_dict(_save(obj, tmp_path / "wrapped.pt", fmt))
    assert list(sd) == ["a.weight", "b"]  # ints dropped, prefix stripped
    _assert_same(sd["b"], inner["module.b"])


def test_partial_module_prefix_is_kept(tmp_path):
    sd = load_torch_state_dict(_save({"module.a": torch.ones(1), "b": torch.zeros(1)}, tmp_path / "p.pt"))
    assert sorted(sd) == ["b", "module.a"]


def test_big_endian_byteorder_record(tmp_path):
    src = _save({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3).t()}, tmp_path / "le.pt")
    dst = tmp_path / "be.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in info.filename:
                data = np.frombuffer(data, "<f4").astype(">f4").tobytes()
            zout.writestr(info.filename, data)
    sd = load_torch_state_dict(dst)
    assert sd["w"].dtype == np.float32 and sd["w"].dtype.isnative
    np.testing.assert_array_equal(sd["w"], np.arange(6, dtype=np.float32).reshape(2, 3).T)


def test_new_dtype_uses_rebuild_tensor_v3(tmp_path):
    t = torch.arange(5).to(torch.uint16)
    sd = load_torch_state_dict(_save({"u": t}, tmp_path / "u16.pt"))
    assert sd["u"].dtype == np.uint16
    np.testing.assert_array_equal(sd["u"], np.arange(5))


# ----------------------------------------------------------------------------------------------- TorchScript
class _Sub(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.register_buffer("counts", torch.arange(4))
        self.register_buffer("scratch", torch.ones(2), persistent=False)
        self.k = 5

    def forward(self, x):
        return self.lin(x) + self.k


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.sub = _Sub()
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2, bias=False), torch.nn.LayerNorm(2)])
        self.proj = torch.nn.Parameter(torch.randn(2, 2).t())  # non-contiguous parameter
        self.logit_scale = torch.nn.Parameter(torch.tensor(4.6))
        self.register_buffer("mask", torch.ones(2, 2).bfloat16())
        self.plain = torch.zeros(3)  # plain tensor attribute: not in state_dict
        self.input_resolution = 224

    def forward(self, x):
        y = self.sub(x)
        for block in self.blocks:
            y = block(y)
        return (y @ self.proj) * self.logit_scale * self.input_resolution + self.plain.sum()


@pytest.mark.parametrize("mode", ["script", "trace"])
def test_torchscript_matches_jit_state_dict(tmp_path, mode):
    net = _Net().eval()
    module = torch.jit.script(net) if mode == "script" else torch.jit.trace(net, torch.randn(1, 3))
    path = tmp_path / f"{mode}.pt"
    torch.jit.save(module, str(path))
    ref = torch.jit.load(str(path)).state_dict()
    sd = load_torch_state_dict(path)
    assert list(sd) == list(ref)
    assert "sub.scratch" in sd and "plain" not in sd and "input_resolution" not in sd
    for name, t in ref.items():
        _assert_same(sd[name], t)
    root = load_torch_object(path)
    assert isinstance(root, ScriptObject) and root.is_module
    assert root.parameters == ["proj", "logit_scale"] and root.buffers == ["mask"]
    if mode == "script":  # scripted modules keep their int attributes, traced ones inline them
        assert root.state["input_resolution"] == 224


def test_torchscript_open_clip_model(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    model = open_clip.CLIP(embed_dim=32, quick_gelu=True,
                           vision_cfg=open_clip.CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=16,
                                                              image_size=32),
                           text_cfg=open_clip.CLIPTextCfg(context_length=8, vocab_size=100, width=64, heads=2,
                                                          layers=2)).eval()
    path = tmp_path / "clip_jit.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    ref = torch.jit.load(str(path)).state_dict()
    sd = load_torch_state_dict(path)
    assert list(sd) == list(ref)
    assert set(model.state_dict()) < set(sd) and "attn_mask" in sd  # non-persistent buffers are included
    assert {"positional_embedding", "logit_scale", "visual.conv1.weight", "visual.class_embedding"} <= set(sd)
    for name, t in ref.items():
        _assert_same(sd[name], t)


# ----------------------------------------------------------------------------------------------- safetensors
def test_safetensors_all_dtypes_including_bf16(tmp_path):
    st_torch = pytest.importorskip("safetensors.torch")
    tensors = {str(d).split(".")[-1]: _sample(d).contiguous() for d in DTYPES}
    tensors["scalar"] = torch.tensor(1.5)
    tensors["empty"] = torch.zeros(0, 3)
    path = tmp_path / "model.safetensors"
    st_torch.save_file(tensors, str(path), metadata={"format": "pt"})
    for sd in (load_torch_state_dict(path), load_safetensors(path)):
        assert set(sd) == set(tensors)
        for name, t in tensors.items():
            _assert_same(sd[name], t)


def test_safetensors_bad_dtype_and_truncation(tmp_path):
    st_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "f8.safetensors"
    st_torch.save_file({"x": torch.zeros(2).to(torch.float8_e4m3fn)}, str(path))
    with pytest.raises(CheckpointError, match="unsupported dtype"):
        load_torch_state_dict(path)
    good = tmp_path / "ok.safetensors"
    st_torch.save_file({"x": torch.zeros(64)}, str(good))
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(good.read_bytes()[:-16])
    with pytest.raises(CheckpointError, match="trunc.safetensors"):
        load_torch_state_dict(truncated)


# ----------------------------------------------------------------------------------------------- errors
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_torch_state_dict(tmp_path / "nope.pt")


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_checkpoint(tmp_path, fmt):
    data = _save({"w": torch.randn(64, 64)}, tmp_path / "full.pt", fmt).read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_torch_state_dict(path)


def test_zip_with_corrupt_directory_offset(tmp_path):
    """A zip whose end record points before the file start: was a bare ``OSError: [Errno 22]`` without the file."""
    data = bytearray(_save({"w": torch.randn(4, 4)}, tmp_path / "full.pt").read_bytes())
    end = data.rfind(b"PK\x06\x06")  # torch writes ZIP64 end records
    data[end + 48:end + 56] = (0x7FFFFFF0).to_bytes(8, "little")  # central directory offset
    path = tmp_path / "bad_offset.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="bad_offset.pt: corrupt or truncated zip archive"):
        load_torch_state_dict(path)


def test_unknown_format_and_no_tensors(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world, not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.bin.*accepted.*safetensors"):
        load_torch_state_dict(junk)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(CheckpointError, match="plain.pkl"):
        load_torch_state_dict(plain)
    with pytest.raises(CheckpointError, match="no tensors"):
        load_torch_state_dict(_save({"epoch": 1, "name": "x"}, tmp_path / "empty.pt"))


def test_storage_too_small_for_tensor_is_rejected(tmp_path):
    src = _save({"w": torch.randn(16, 16)}, tmp_path / "src.pt")
    dst = tmp_path / "short.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info.filename, data[:64] if info.filename.endswith("data/0") else data)
    with pytest.raises(CheckpointError, match="data/0 declares 64 bytes, its storage needs 1024"):
        load_torch_state_dict(dst)


# ----------------------------------------------------------------------------------------------- security
class _SystemCall:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


class _EvalCall:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return eval, (self.code,)


def _write_zip(path, data_pkl, extra=None, prefix="archive"):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{prefix}/data.pkl", data_pkl)
        zf.writestr(f"{prefix}/byteorder", "little")
        for name, data in (extra or {}).items():
            zf.writestr(f"{prefix}/{name}", data)
        zf.writestr(f"{prefix}/version", "3\n")
    return path


def _assert_refused(path, marker, *names):
    with pytest.raises(UnsafeCheckpointError) as info:
        load_torch_state_dict(path)
    message = str(info.value)
    assert str(path) in message and any(n in message for n in names), message
    assert not marker.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_os_system_in_torch_save_is_refused(tmp_path, fmt):
    marker = tmp_path / "pwned"
    path = _save({"w": torch.ones(2), "evil": _SystemCall(f"touch {marker}")}, tmp_path / "evil.pt", fmt)
    _assert_refused(path, marker, "posix.system", "os.system")


def test_handcrafted_zip_with_os_system_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = _write_zip(tmp_path / "evil.pt", pickle.dumps(_SystemCall(f"touch {marker}"), protocol=2))
    _assert_refused(path, marker, "posix.system", "os.system")


def test_torchscript_archive_with_os_system_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    extra = {"constants.pkl": pickle.dumps((), protocol=2),
             "code/__torch__.py": "class M(Module):\n  __parameters__ = []\n  __buffers__ = []\n"}
    payload = {"inner": _SystemCall(f"touch {marker}")}
    path = _write_zip(tmp_path / "evil_script.pt", pickle.dumps(payload, protocol=2), extra)
    _assert_refused(path, marker, "posix.system", "os.system")


def test_eval_via_stack_global_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_EvalCall(f"__import__('os').system('touch {marker}')"), protocol=4)
    assert "STACK_GLOBAL" in {op.name for op, _, _ in pickletools.genops(payload)}
    _assert_refused(_write_zip(tmp_path / "evil4.pt", payload), marker, "builtins.eval")


@pytest.mark.parametrize("payload, refused", [
    (pickle.dumps(np.arange(3), protocol=2), "_reconstruct"),
    (b"\x80\x02c__torch__\nM\n)\x81.", "__torch__.M"),  # placeholders only inside TorchScript archives
    (b"\x80\x02csubprocess\nPopen\n.", "subprocess.Popen"),
    (b"\x80\x02ctorch\nload\n.", "torch.load"),
    (b"(S'true'\nios\nsystem\n.", "os.system"),  # protocol-0 INST goes through find_class too
])
def test_other_globals_are_refused(tmp_path, payload, refused):
    marker = tmp_path / "never"
    _assert_refused(_write_zip(tmp_path / "g.pt", payload), marker, refused)


def test_build_on_internal_object_is_refused(tmp_path):
    # GLOBAL torch.FloatStorage, then BUILD {"dtype": "int8"}: must not be able to mutate the allow-list
    payload = b"\x80\x02ctorch\nFloatStorage\n}X\x05\x00\x00\x00dtypeX\x04\x00\x00\x00int8sb."
    with pytest.raises(UnsafeCheckpointError):
        load_torch_object(_write_zip(tmp_path / "b.pt", payload))
    sd = load_torch_state_dict(_save({"w": torch.ones(2)}, tmp_path / "ok.pt"))
    assert sd["w"].dtype == np.float32


# ----------------------------------------------------------------------------------------------- torch-free
def test_reader_works_without_torch(tmp_path):
    st_torch = pytest.importorskip("safetensors.torch")
    tensors = {"a": torch.randn(3, 4).t(), "b": torch.arange(5), "c": torch.randn(2).bfloat16()}
    _save({"state_dict": tensors}, tmp_path / "zip.pt")
    _save(tensors, tmp_path / "legacy.pt", "legacy")
    torch.jit.save(torch.jit.script(_Net()), str(tmp_path / "script.pt"))
    st_torch.save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "m.safetensors"))
    script = (
        "import sys, numpy as np\n"
        "sys.modules['torch'] = None\n"
        "from mindram.checkpoint.torch_reader import load_torch_state_dict\n"
        "out = {}\n"
        "for name in ['zip.pt', 'legacy.pt', 'script.pt', 'm.safetensors']:\n"
        "    for key, value in load_torch_state_dict(name).items():\n"
        "        out[name + ':' + key] = value\n"
        "assert sys.modules['torch'] is None\n"
        "np.savez('out.npz', **out)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "out.npz") as out:
        for fmt in ("zip.pt", "legacy.pt", "m.safetensors"):
            for key, t in tensors.items():
                _assert_same(out[f"{fmt}:{key}"], t)
        ref = torch.jit.load(str(tmp_path / "script.pt")).state_dict()
        assert sorted(k for k in out.files if k.startswith("script.pt:")) == sorted(f"script.pt:{k}" for k in ref)
        for key, t in ref.items():
            _assert_same(out[f"script.pt:{key}"], t)

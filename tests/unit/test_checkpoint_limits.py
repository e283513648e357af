"""Hostile checkpoint files: each reader refuses what it cannot read within its bounds with one CheckpointError
line naming the file (docs/limits.md, "Checkpoints and weight files"), and never reads or allocates what the
file's own metadata does not need. The files are built here with torch/safetensors, then damaged by hand."""
import json
import pickle
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mindram.checkpoint import limits, mindspore_ckpt, safetensors_file  # noqa: E402
from mindram.checkpoint.torch_reader import load_safetensors, load_torch_object, load_torch_state_dict  # noqa: E402
from mindram.errors import CheckpointError, ConfigError  # noqa: E402
from tests.unit.checkpoint_fixtures import ckpt_bytes, last_json, run_light  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


def _one_line(exc_info, *parts):
    message = str(exc_info.value)
    assert "\n" not in message and all(p in message for p in parts), message
    return message


def _rezip(src, dst, replace=None, compression=zipfile.ZIP_STORED):
    """Copy zip ``src`` to ``dst`` with the members named (by suffix) in ``replace`` given new contents."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            for suffix, new in (replace or {}).items():
                if info.filename.endswith(suffix):
                    data = new
            zout.writestr(info.filename, data)
    return dst


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


# ----------------------------------------------------------------------------------------------- torch zip
def test_a_storage_member_inflating_past_what_its_tensor_needs_is_refused_before_it_is_read(tmp_path):
    src = tmp_path / "w.pt"
    torch.save({"w": torch.ones(4)}, src)
    bomb = _rezip(src, tmp_path / "bomb.pt", {"data/0": bytes(32 << 20)}, zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 200_000   # 32 MiB of zeros in ~32 KiB

    def load():
        with pytest.raises(CheckpointError) as info:
            load_torch_state_dict(bomb)
        _one_line(info, str(bomb), "data/0", str(32 << 20), "16 bytes")
    assert _peak_bytes(load) < 4 << 20


def test_data_pkl_is_bounded_and_the_limit_can_be_raised(tmp_path, monkeypatch):
    path = tmp_path / "many.pt"
    torch.save({f"tensor_{i}": torch.zeros(1) for i in range(200)}, path)
    monkeypatch.setenv(limits.METADATA_ENV, "4096")
    with pytest.raises(CheckpointError) as info:
        load_torch_state_dict(path)
    _one_line(info, str(path), "data.pkl", "4096", limits.METADATA_ENV)
    monkeypatch.setenv(limits.METADATA_ENV, str(1 << 20))
    assert len(load_torch_state_dict(path)) == 200
    monkeypatch.setenv(limits.METADATA_ENV, "lots")
    with pytest.raises(ConfigError, match=limits.METADATA_ENV):
        load_torch_state_dict(path)


def test_a_data_pkl_bomb_is_refused_without_inflating_it(tmp_path):
    src = tmp_path / "w.pt"
    torch.save({"w": torch.ones(4)}, src)
    padded = pickle.dumps({"pad": b"\0" * (80 << 20)}, protocol=4)   # 80 MiB, over the 64 MiB default
    bomb = _rezip(src, tmp_path / "pkl_bomb.pt", {"data.pkl": padded}, zipfile.ZIP_DEFLATED)

    def load():
        with pytest.raises(CheckpointError) as info:
            load_torch_state_dict(bomb)
        _one_line(info, str(bomb), "data.pkl", limits.METADATA_ENV)
    assert _peak_bytes(load) < 4 << 20


def test_a_member_inflating_past_its_declared_size_is_corrupt(tmp_path):
    """The declared size is patched down to what the tensor needs; the data inflates further: never trusted."""
    src = tmp_path / "w.pt"
    torch.save({"w": torch.ones(4)}, src)
    path = _rezip(src, tmp_path / "liar.pt", {"data/0": b"\x01" * (1 << 20)}, zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("data/0"))
    data[info.header_offset + 22:info.header_offset + 26] = struct.pack("<I", 16)   # local header
    name = info.filename.encode()
    central = data.find(b"PK\x01\x02")
    while data[central + 46:central + 46 + len(name)] != name:   # the member's central directory entry
        central = data.find(b"PK\x01\x02", central + 4)
    data[central + 24:central + 28] = struct.pack("<I", 16)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        load_torch_state_dict(path)
    _one_line(info, str(path))


def test_a_view_repeating_its_storage_past_the_limit_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "expanded.pt"
    torch.save({"w": torch.arange(1024.0).expand(1024, 1024)}, path)   # 4 KiB stored, 4 MiB materialised
    np.testing.assert_array_equal(load_torch_state_dict(path)["w"], np.broadcast_to(np.arange(1024.0), (1024,) * 2))
    monkeypatch.setenv(limits.REPEATED_ENV, str(1 << 20))
    with pytest.raises(CheckpointError) as info:
        load_torch_state_dict(path)
    _one_line(info, str(path), limits.REPEATED_ENV)


# ----------------------------------------------------------------------------------------------- TorchScript
def _script_archive(tmp_path, declaration, name="decl.pt"):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x):
            return self.lin(x)

    src = tmp_path / "src_script.pt"
    torch.jit.save(torch.jit.script(Net()), str(src))
    with zipfile.ZipFile(src) as zf:
        code = next(n for n in zf.namelist() if "/code/" in n and n.endswith(".py") and b"__parameters__"
                    in zf.read(n))
        text = zf.read(code).decode()
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if "__parameters__" in line)
    indent = lines[index][:len(lines[index]) - len(lines[index].lstrip())]
    lines[index] = f"{indent}__parameters__ = {declaration}"
    return _rezip(src, tmp_path / name, {code: "\n".join(lines).encode()}), code


@pytest.mark.parametrize("declaration", ["[" + "-" * 59_000 + "1]",      # the parser alone reached 5.4 GB
                                         '["weight", ["bias"]]', '["weight", 1]', "[" * 150 + "]" * 150])
def test_torchscript_declarations_are_read_as_flat_name_lists_only(tmp_path, declaration):
    path, code = _script_archive(tmp_path, declaration)
    with pytest.raises(CheckpointError) as info:
        load_torch_state_dict(path)
    _one_line(info, str(path), code.split("/", 1)[1], "__parameters__")


def test_torchscript_declaration_lines_are_bounded(tmp_path):
    names = ", ".join(f'"p{i}"' for i in range(limits.MAX_DECLARATION_CHARS // 6))
    path, _ = _script_archive(tmp_path, f"[{names}]")
    with pytest.raises(CheckpointError) as info:
        load_torch_state_dict(path)
    _one_line(info, str(path), "__parameters__", str(limits.MAX_DECLARATION_CHARS))


def test_torchscript_declarations_still_read(tmp_path):
    path, _ = _script_archive(tmp_path, '["weight", "bias", ]')
    assert sorted(load_torch_state_dict(path)) == ["lin.bias", "lin.weight"]


def test_a_torchscript_module_containing_itself_is_refused(tmp_path):
    cycle = b"\x80\x02c__torch__\nM\n)\x81q\x00}X\x04\x00\x00\x00selfh\x00sb."   # M(); M.self = M
    path = tmp_path / "cycle.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", cycle)
        zf.writestr("archive/code/__torch__.py", "class M(Module):\n  __parameters__ = []\n  __buffers__ = []\n")
    with pytest.raises(CheckpointError) as info:
        load_torch_state_dict(path)
    _one_line(info, str(path), "self")


# ----------------------------------------------------------------------------------------------- nesting, legacy
def _deep_pickle(depth):
    return b"\x80\x02}X\x01\x00\x00\x00w" + b"]" * depth + b"a" * (depth - 1) + b"s."


def test_deeply_nested_pickles_are_refused(tmp_path):
    path = tmp_path / "deep.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", _deep_pickle(100_000))
    with pytest.raises(CheckpointError) as info:
        load_torch_object(path)
    _one_line(info, str(path), "nested", str(limits.MAX_DEPTH))
    legacy = tmp_path / "deep_legacy.pt"
    legacy.write_bytes(b"".join(pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001, {}))
                       + _deep_pickle(100_000) + pickle.dumps([], protocol=2))
    with pytest.raises(CheckpointError) as info:
        load_torch_object(legacy)
    _one_line(info, str(legacy), "nested")
    shallow = tmp_path / "shallow.pt"
    torch.save({"a": [[[[{"w": torch.ones(2)}]]]]}, shallow)
    assert load_torch_object(shallow)["a"][0][0][0][0]["w"].tolist() == [1.0, 1.0]


def test_a_deeply_nested_tuple_is_refused_before_hashing_it_crashes_the_process(tmp_path):
    deep_key = b"\x80\x02}N" + b"\x85" * 1_000_000 + b"Ns."   # {((((None,),),)...): None}
    with zipfile.ZipFile(tmp_path / "deep_key.pt", "w") as zf:
        zf.writestr("archive/data.pkl", deep_key)
    header = b"".join(pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001, {}))
    (tmp_path / "deep_key_legacy.pt").write_bytes(header + deep_key + pickle.dumps([], protocol=2))
    (tmp_path / "deep_key.pkl").write_bytes(deep_key)
    script = """
import json
from mindram.checkpoint.torch_reader import load_torch_object
from mindram.utils.safe_pickle import load_restricted_pickle
out = {}
for name, read in [("deep_key.pt", load_torch_object), ("deep_key_legacy.pt", load_torch_object),
                   ("deep_key.pkl", load_restricted_pickle)]:
    try:
        read(name)
        out[name] = "read"
    except Exception as exc:
        out[name] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""
    code, stdout, stderr = run_light(script, tmp_path)
    assert code == 0, f"the reader crashed ({code}): {stderr[-2000:]}"
    out = last_json(stdout)
    for name in ("deep_key.pt", "deep_key_legacy.pt"):
        assert out[name].startswith("CheckpointError: ") and "tuples nested deeper than 200" in out[name], out
    assert out["deep_key.pkl"].startswith("DataError: ") and "tuples nested deeper than 200" in out["deep_key.pkl"]


def test_a_huge_memo_index_is_refused_before_the_unpickler_allocates_its_table(tmp_path):
    """``LONG_BINPUT 2**27`` (5 bytes) made the C unpickler allocate and zero a 1 GiB memo table."""
    bomb = b"\x80\x02}r" + struct.pack("<I", 1 << 27) + b"."
    with zipfile.ZipFile(tmp_path / "memo.pt", "w") as zf:
        zf.writestr("archive/data.pkl", bomb)
    (tmp_path / "memo.pkl").write_bytes(bomb)
    script = """
import json, resource
from mindram.checkpoint.torch_reader import load_torch_object
from mindram.utils.safe_pickle import load_restricted_pickle
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {}
for name, read in [("memo.pt", load_torch_object), ("memo.pkl", load_restricted_pickle)]:
    try:
        read(name)
        out[name] = "read"
    except Exception as exc:
        out[name] = type(exc).__name__ + ": " + str(exc)
out["grown_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024
print(json.dumps(out))
"""
    code, stdout, stderr = run_light(script, tmp_path)
    assert code == 0, stderr[-2000:]
    out = last_json(stdout)
    assert out["grown_mib"] < 64, out
    assert out["memo.pt"].startswith("CheckpointError: ") and f"memo index {1 << 27}" in out["memo.pt"], out
    assert out["memo.pkl"].startswith("DataError: ") and f"memo index {1 << 27}" in out["memo.pkl"], out


@pytest.mark.parametrize("numel", [2 ** 40, 2 ** 61, 2 ** 63 - 1, 13])
def test_a_legacy_storage_longer_than_the_file_is_refused_before_it_is_allocated(tmp_path, numel):
    src = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(3)}, src, _use_new_zipfile_serialization=False)
    data = src.read_bytes()
    assert data[-20:-12] == struct.pack("<q", 3)   # the storage's length record, then its 12 bytes
    path = tmp_path / "long.pt"
    path.write_bytes(data[:-20] + struct.pack("<q", numel) + data[-12:])
    with pytest.raises(CheckpointError) as info:
        load_torch_state_dict(path)
    _one_line(info, str(path), str(numel))


def test_legacy_pickles_are_bounded(tmp_path, monkeypatch):
    path = tmp_path / "legacy_many.pt"
    torch.save({f"tensor_{i}": torch.zeros(1) for i in range(200)}, path, _use_new_zipfile_serialization=False)
    assert len(load_torch_state_dict(path)) == 200
    monkeypatch.setenv(limits.METADATA_ENV, "4096")
    with pytest.raises(CheckpointError) as info:
        load_torch_state_dict(path)
    _one_line(info, str(path), "4096", limits.METADATA_ENV)


# ----------------------------------------------------------------------------------------------- safetensors
def _safetensors(path, header, data=b""):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


F32_2x2 = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}


@pytest.mark.parametrize("entry, expected", [
    ({"dtype": "F32", "shape": [2, 2], "data_offsetr": [0, 16]}, "data_offsets"),   # a 1-bit flip in the key
    ([1, 2], "dict"),
    ("F32", "dict"),
    ({"dtype": "F32", "shape": "22", "data_offsets": [0, 16]}, "shape"),
    ({"dtype": "F32", "shape": ["2", "2"], "data_offsets": [0, 16]}, "shape"),
    ({"dtype": "F32", "shape": [-2, -2], "data_offsets": [0, 16]}, "shape"),
    ({"dtype": "F32", "shape": [True, 4], "data_offsets": [0, 16]}, "shape"),
    ({"dtype": "F32", "shape": [2, 2.0], "data_offsets": [0, 16]}, "shape"),
    ({"dtype": "F32", "shape": [2, 2], "data_offsets": [0]}, "data_offsets"),
    ({"dtype": "F32", "shape": [2, 2], "data_offsets": [0, "16"]}, "data_offsets"),
    ({"dtype": "F32", "shape": [2, 2], "data_offsets": [16, 0]}, "data_offsets"),
    ({"dtype": "F32", "shape": [2, 2], "data_offsets": [-16, 0]}, "data_offsets"),
    ({"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]}, "data_offsets"),   # past the end of the data
    ({"dtype": "F32", "shape": [2 ** 40, 2 ** 40], "data_offsets": [0, 16]}, "data_offsets"),
    ({"dtype": ["F32"], "shape": [2, 2], "data_offsets": [0, 16]}, "dtype"),
])
def test_corrupt_safetensors_entries_are_refused(tmp_path, entry, expected):
    path = _safetensors(tmp_path / "bad.safetensors", {"weight": entry}, bytes(16))
    for read in (load_safetensors, load_torch_state_dict):
        with pytest.raises(CheckpointError) as info:
            read(path)
        _one_line(info, str(path), "'weight'", expected)


def test_overlapping_safetensors_tensors_are_refused(tmp_path):
    header = {"a": F32_2x2, "b": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]}}
    path = _safetensors(tmp_path / "overlap.safetensors", header, bytes(24))
    with pytest.raises(CheckpointError) as info:
        load_safetensors(path)
    _one_line(info, str(path), "'a'", "'b'", "overlap")


@pytest.mark.parametrize("header", [[], "text", 3, {"weight": F32_2x2, "__metadata__": 7}])
def test_a_safetensors_header_that_is_not_a_dict_of_tensors_is_refused(tmp_path, header):
    path = _safetensors(tmp_path / "odd.safetensors", header, bytes(16))
    with pytest.raises(CheckpointError) as info:
        load_safetensors(path)
    _one_line(info, str(path))


def test_a_deeply_nested_safetensors_header_is_refused(tmp_path):
    raw = b"[" * 100_000 + b"]" * 100_000
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(CheckpointError) as info:
        load_safetensors(path)
    _one_line(info, str(path))


def test_the_safetensors_header_is_bounded(tmp_path, monkeypatch):
    header = {f"t{i}": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i in range(100)}
    path = _safetensors(tmp_path / "big_header.safetensors", header, bytes(400))
    assert len(load_safetensors(path)) == 100
    monkeypatch.setenv(limits.METADATA_ENV, "1024")
    with pytest.raises(CheckpointError) as info:
        load_safetensors(path)
    _one_line(info, str(path), "1024", limits.METADATA_ENV)
    with open(path, "rb") as f, pytest.raises(CheckpointError, match=limits.METADATA_ENV):
        safetensors_file.read_header(f, path)


# ----------------------------------------------------------------------------------------------- MindSpore .ckpt
def _ckpt(path, tag, dims, tensor_type, content):
    path.write_bytes(ckpt_bytes({tag: (dims, tensor_type, content)}))
    return path


def test_the_hand_built_ckpt_reads(tmp_path):
    path = _ckpt(tmp_path / "ok.ckpt", "w", [2, 2], "Float32", np.arange(4, dtype=np.float32).tobytes())
    index = mindspore_ckpt.read_index(path)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(mindspore_ckpt.read_tensor(f, index["w"]), [[0, 1], [2, 3]])


@pytest.mark.parametrize("dims", [[-2, -2], [2 ** 32, 2 ** 32], [2 ** 63, 2], [-1, 0]])
def test_ckpt_dims_that_are_negative_or_overflow_are_refused(tmp_path, dims):
    path = _ckpt(tmp_path / "dims.ckpt", "w", dims, "Float32", bytes(16 if -2 in dims else 0))
    with pytest.raises(CheckpointError) as info:
        mindspore_ckpt.read_index(path)
    _one_line(info, "'w'", "dims")

"""Seeded fuzzing of every checkpoint reader: a few hundred mutations of a small valid file per format (torch zip
``.pt``, legacy ``.pt``, TorchScript, ``.safetensors``, MindSpore ``.ckpt``), built here with torch/safetensors/
a hand-written protobuf. Every mutated file must read correctly (a dict of arrays) or raise a one-line
MindramError; the readers run in a child process without torch or MindSpore, which must not crash or hang and
whose peak memory may grow by at most ``PEAK_GROWTH_MIB`` over its imports. Mutations are raw bytes of the file,
and, format-aware, one zip member (CRCs kept valid) or one field of the safetensors JSON header.
"""
import io
import json
import random
import struct
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")
st_torch = pytest.importorskip("safetensors.torch")

from tests.unit.checkpoint_fixtures import ckpt_bytes, last_json, run_light  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")

SEED = 1729
MUTATIONS = 300          # per format
PEAK_GROWTH_MIB = 128    # the child's peak RSS over what its imports took
SLOWEST_READ_S = 5.0     # one mutated file (files are a few KiB; a read takes milliseconds)
INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80",
               b"\xff" * 8, b"(", b")", b"]", b"}", b"\x85", b"-", b"[", b"\n", b'"']
JSON_VALUES = [-1, 0, 1, 2 ** 40, 2 ** 63, "x", "F32", [], {}, None, True, 1.5, [0], [1, 2, 3], [-1, 4], [0, 2 ** 40],
               [[1]], ["1"]]


class _FuzzedScriptNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.register_buffer("mask", torch.tril(torch.ones(2, 2)))
        self.scale = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        return self.lin(x) * self.scale


TENSORS = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.arange(5), "h": torch.ones(2).half(),
           "bf": torch.tensor([1.5, -2.0]).bfloat16(), "flag": torch.tensor([True, False])}


def _build(tmp_path):
    """``{format: (path of the valid file, expected {name: array})}``, expected values from torch itself."""
    views = dict(TENSORS, t=TENSORS["w"].t(), row=TENSORS["w"][1])
    files = {}
    torch.save(views, tmp_path / "zip.pt")
    files["zip"] = (tmp_path / "zip.pt", views)
    torch.save(TENSORS, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    files["legacy"] = (tmp_path / "legacy.pt", TENSORS)
    torch.jit.save(torch.jit.trace(_FuzzedScriptNet(), torch.ones(1, 3)), str(tmp_path / "script.pt"))  # trace: no source compiled
    files["torchscript"] = (tmp_path / "script.pt", torch.jit.load(str(tmp_path / "script.pt")).state_dict())
    st_torch.save_file(TENSORS, str(tmp_path / "model.safetensors"))
    files["safetensors"] = (tmp_path / "model.safetensors", TENSORS)
    arrays = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.arange(5, dtype=np.int64),
              "h": np.ones(2, np.float16), "flag": np.array([True, False])}
    types = {"float32": "Float32", "int64": "Int64", "float16": "Float16", "bool": "Bool"}
    (tmp_path / "model.ckpt").write_bytes(ckpt_bytes({k: (list(v.shape), types[str(v.dtype)], v.tobytes())
                                                      for k, v in arrays.items()}))
    files["ckpt"] = (tmp_path / "model.ckpt", {k: torch.from_numpy(v) for k, v in arrays.items()})
    return files


def _mutate_bytes(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        if not data:
            break
        at, kind = rng.randrange(len(data)), rng.randrange(6)
        if kind == 0:
            data[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data[at] = rng.randrange(256)
        elif kind == 2:
            value = rng.choice(INTERESTING)
            data[at:at + len(value)] = value
        elif kind == 3:
            del data[at:at + rng.randint(1, 16)]
        elif kind == 4:
            data[at:at] = data[at:at + rng.randint(1, 16)]
        else:
            del data[at:]
    return bytes(data)


def _mutate_member(rng, data):
    """The zip archive ``data`` with one member's bytes mutated, written again with valid CRCs."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w") as zout:
        infos = zin.infolist()
        victim = rng.choice([i for i in infos if i.filename.endswith(("data.pkl", ".py", "byteorder"))] * 3 + infos)
        for info in infos:
            body = zin.read(info)
            zout.writestr(info.filename, _mutate_bytes(rng, body) if info is victim else body)
    return out.getvalue()


def _mutate_header(rng, data):
    """The safetensors file ``data`` with one field of its JSON header replaced, the header length kept right."""
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + length])
    name = rng.choice([n for n in header if n != "__metadata__"])
    if rng.random() < 0.2:
        header[name] = rng.choice(JSON_VALUES)
    else:
        header[name][rng.choice(["dtype", "shape", "data_offsets"])] = rng.choice(JSON_VALUES)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + length:]


def _mutants(fmt, data, rng):
    aware = {"zip": _mutate_member, "torchscript": _mutate_member, "safetensors": _mutate_header}.get(fmt)
    for _ in range(MUTATIONS):
        yield aware(rng, data) if aware and rng.random() < 0.5 else _mutate_bytes(rng, data)


CHILD = """
import json, os, resource, sys, time
import numpy as np
from mindram.checkpoint import mindspore_ckpt
from mindram.checkpoint.torch_reader import load_torch_state_dict
from mindram.errors import MindramError

def read(fmt, name):
    if fmt != "ckpt":
        return load_torch_state_dict(name)
    index = mindspore_ckpt.read_index(name)
    with open(name, "rb") as f:
        return {key: mindspore_ckpt.read_tensor(f, entry) for key, entry in index.items()}

manifest = json.load(open("manifest.json"))
base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
counts, unexpected, valid, slowest = {}, [], {}, 0.0
for fmt, name in manifest:
    with open("progress.txt", "w") as p:
        p.write(name)
    start = time.perf_counter()
    try:
        out = read(fmt, name)
        bad = [k for k, v in out.items() if not (isinstance(k, str) and isinstance(v, np.ndarray))]
        outcome = "read" if isinstance(out, dict) and not bad else "bad result"
        if name.startswith("valid_"):
            valid[fmt] = {k: [list(v.shape), str(v.dtype), v.astype(np.float64).ravel().tolist()]
                          for k, v in out.items()}
    except MindramError as exc:
        outcome = "error" if "\\n" not in str(exc) and str(exc) else "multi-line error"
        if outcome != "error":
            unexpected.append(f"{name}: multi-line {type(exc).__name__}: {exc!r}"[:300])
    except Exception as exc:
        outcome = "unexpected"
        unexpected.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
    slowest = max(slowest, time.perf_counter() - start)
    key = f"{fmt}:{outcome}"
    counts[key] = counts.get(key, 0) + 1
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_kib) // 1024
print(json.dumps({"counts": counts, "unexpected": unexpected[:20], "valid": valid, "grown_mib": grown,
                  "slowest_s": slowest}))
"""


def test_every_reader_survives_hundreds_of_mutations(tmp_path):
    rng = random.Random(SEED)
    files = _build(tmp_path)
    work = tmp_path / "fuzz"
    work.mkdir()
    manifest = []
    for fmt, (path, _) in files.items():
        data = path.read_bytes()
        name = f"valid_{fmt}{path.suffix}"
        (work / name).write_bytes(data)
        manifest.append((fmt, name))
        for i, mutant in enumerate(_mutants(fmt, data, rng)):
            name = f"{fmt}_{i:03d}{path.suffix}"
            (work / name).write_bytes(mutant)
            manifest.append((fmt, name))
    (work / "manifest.json").write_text(json.dumps(manifest))
    # a tight repeated-bytes budget: the files are KiBs, nothing legitimate repeats more
    code, stdout, stderr = run_light("import os; os.environ['MINDRAM_CHECKPOINT_MAX_REPEATED_BYTES'] = str(1 << 20)\n"
                                     + CHILD, work, timeout=240)
    last = (work / "progress.txt").read_text() if (work / "progress.txt").exists() else "?"
    assert code == 0, f"the readers crashed ({code}) on {last}: {stderr[-3000:]}"
    report = last_json(stdout)
    counts = report["counts"]
    assert not report["unexpected"], report["unexpected"]
    assert not [k for k in counts if k.endswith(("bad result", "multi-line error", "unexpected"))], counts
    for fmt in files:   # the fuzz reached past the first check: some mutants read, most are refused
        assert counts.get(f"{fmt}:read", 0) >= 1 and counts.get(f"{fmt}:error", 0) >= MUTATIONS // 10, counts
    assert report["grown_mib"] < PEAK_GROWTH_MIB, report
    assert report["slowest_s"] < SLOWEST_READ_S, report
    for fmt, (_, expected) in files.items():   # the unmutated files read exactly
        got = report["valid"][fmt]
        assert sorted(got) == sorted(expected), (fmt, sorted(got))
        for key, tensor in expected.items():
            want = tensor.detach().float() if tensor.dtype == torch.bfloat16 else tensor.detach()
            shape, _, values = got[key]
            assert shape == list(want.shape), (fmt, key)
            np.testing.assert_array_equal(np.asarray(values), want.double().numpy().ravel(), err_msg=f"{fmt}:{key}")

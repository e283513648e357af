"""Loading weights one tensor at a time into a model built without random values.

* mindram's ``.ckpt`` reader (``mindram.checkpoint.mindspore_ckpt``) gives what ``mindspore.load_checkpoint``
  gives, for every dtype, 0-d tensors, tensors MindSpore writes in slices (over 512 MiB; the slice size is
  lowered here), the ``crc_check`` trailer and string metadata (left out);
* ``load_weights(path)`` reads a tensor only when it copies it: never the whole file;
* ``from_pretrained`` builds the model inside ``no_init_weights``: no random initial values are drawn, and
  loading gives the saved values exactly.
"""
import mindspore as ms
import numpy as np
import pytest
from mindspore.train import serialization

import mindram
from mindram.checkpoint import mindspore_ckpt
from mindram.errors import CheckpointError
from mindram.models import modeling_utils
from mindram.models.modeling_utils import checkpoint_index, checkpoint_names, read_checkpoint, write_checkpoint
from mindram.utils.random import init_parameter, no_init_weights
from tests.unit.test_clip_model import tiny

RNG = np.random.default_rng(0)
VALUES = {"f32": RNG.normal(size=(3, 5)).astype(np.float32), "i32": np.arange(7, dtype=np.int32),
          "f16": RNG.normal(size=(2, 2, 2)).astype(np.float16), "flag": np.array([True, False]),
          "f64_0d": np.array(3.5, np.float64), "i64": np.array([2 ** 40, -3], np.int64),
          "sliced": RNG.normal(size=(100, 40)).astype(np.float32)}


def save(path, crc_check=False, values=VALUES, **tensors):
    items = [{"name": k, "data": ms.Tensor(v)} for k, v in values.items()]
    items += [{"name": k, "data": t} for k, t in tensors.items()]
    ms.save_checkpoint(items, str(path), crc_check=crc_check, append_dict={"note": "text", "epoch": 3})
    return path


@pytest.mark.parametrize("crc_check", [False, True])
@pytest.mark.parametrize("slice_kib", [None, 4], ids=["whole", "sliced"])
def test_ckpt_reader_matches_mindspore(tmp_path, monkeypatch, crc_check, slice_kib):
    if slice_kib:   # MindSpore writes a tensor over SLICE_SIZE KiB as consecutive values with one tag
        monkeypatch.setattr(serialization, "SLICE_SIZE", slice_kib)
    path = save(tmp_path / "w.ckpt", crc_check)
    entries = mindspore_ckpt.read_index(path)
    assert len(entries["sliced"].slices) == (4 if slice_kib else 1)
    expected = {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items() if not isinstance(v, str)}
    got = read_checkpoint(path)
    assert list(got) == list(VALUES) + ["epoch"] and sorted(got) == sorted(expected)   # "note" is a string
    for name, value in expected.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value)
    assert checkpoint_names(path) == list(got)   # each sliced tensor once
    assert checkpoint_index(path)["sliced"] == ((100, 40), np.dtype(np.float32))


def test_bfloat16_is_read_as_float32(tmp_path):
    values = np.array([[1.5, -2.0], [0.0, 3.25]], np.float32)   # exact in bfloat16
    path = save(tmp_path / "w.ckpt", values={}, w=ms.Tensor(values).astype(ms.bfloat16))
    got = read_checkpoint(path)["w"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, values)


def test_map_tensors_and_garbage_are_checkpoint_errors(tmp_path):
    path = tmp_path / "w.ckpt"
    path.write_bytes(b"\x0a\x05\x0a\x01a\x1a\x00")   # Checkpoint{value: Value{tag: "a", maptensor: {}}}
    with pytest.raises(CheckpointError, match="map tensors"):
        checkpoint_names(path)


def test_load_weights_reads_each_tensor_only_when_it_copies_it(tmp_path, monkeypatch):
    model = mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32")))
    expected = model.state_dict()
    path = write_checkpoint(expected, tmp_path / "w.ckpt")
    events = []
    read_tensor, assign = mindspore_ckpt.read_tensor, modeling_utils._assign
    monkeypatch.setattr(mindspore_ckpt, "read_tensor", lambda f, entry: events.append("read") or read_tensor(f, entry))
    monkeypatch.setattr(modeling_utils, "_assign", lambda p, v: events.append("copy") or assign(p, v))
    with no_init_weights():
        fresh = mindram.CLIPModel(model.config)
    fresh.load_weights(path)
    assert events == ["read", "copy"] * len(expected)   # one tensor in flight, never the whole file
    for name, value in fresh.state_dict().items():
        np.testing.assert_array_equal(value, expected[name])


def test_a_mismatching_file_is_refused_before_anything_is_read(tmp_path, monkeypatch):
    model = mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32")))
    state = model.state_dict()
    state["visual.proj"] = np.zeros((3, 3), np.float32)
    path = write_checkpoint(state, tmp_path / "w.ckpt")
    monkeypatch.setattr(mindspore_ckpt, "read_tensor", lambda f, entry: pytest.fail("tensor data was read"))
    before = model.state_dict()
    with pytest.raises(CheckpointError, match=r"visual\.proj: checkpoint \(3, 3\)"):
        model.load_weights(path)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


class _NoDraws:
    """A generator for ``init_rng`` (``np.random.default_rng``) that fails the test when a value is drawn."""

    def __getattr__(self, method):
        pytest.fail(f"a random initial value was drawn ({method})")


def _no_random_draws(monkeypatch):
    monkeypatch.setattr(np.random, "default_rng", lambda *args, **kwargs: _NoDraws())


@pytest.mark.parametrize("what", ["directory", "safetensors file without a config"])
def test_from_pretrained_draws_no_random_weights_and_loads_them_exactly(tmp_path, monkeypatch, what):
    model = mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32")))
    expected = model.state_dict()
    if what == "directory":
        source = model.save_pretrained(tmp_path / "saved")
    else:   # the config is inferred from the shapes alone (shape_placeholders), then the file is streamed
        source = write_checkpoint(expected, tmp_path / "w.safetensors")
    _no_random_draws(monkeypatch)
    loaded = mindram.CLIPModel.from_pretrained(source)
    assert sorted(loaded.state_dict()) == sorted(expected)
    for name, value in loaded.state_dict().items():
        np.testing.assert_array_equal(value, expected[name])


def test_no_init_weights_is_scoped_and_keeps_the_global_rng_in_step():
    np.random.seed(1)
    calls = []
    with no_init_weights():
        skipped = init_parameter((2, 3), lambda: calls.append(1) or np.ones((2, 3)))
        after_skip = np.random.randint(1000)
    assert calls == [] and skipped.shape == (2, 3)
    built = init_parameter((2, 3), lambda: np.ones((2, 3)))   # outside the block: values again
    np.testing.assert_array_equal(built.asnumpy(), np.ones((2, 3)))
    np.random.seed(1)
    with no_init_weights():
        mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32")))
    after_model_skip = np.random.randint(1000)
    np.random.seed(1)
    mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32")))
    assert np.random.randint(1000) == after_model_skip   # a build draws its generator seeds either way
    assert after_skip == np.random.RandomState(1).randint(1000)


def test_safetensors_reader_matches_safetensors(tmp_path):
    import safetensors.numpy
    values = {k: v for k, v in VALUES.items()}
    values["empty"] = np.zeros((0, 3), np.float32)
    path = tmp_path / "w.safetensors"
    safetensors.numpy.save_file(values, str(path), metadata={"format": "np"})
    got = read_checkpoint(path)
    assert sorted(got) == sorted(safetensors.numpy.load_file(str(path)))
    for name, value in values.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value)
    assert checkpoint_index(path)["f16"] == ((2, 2, 2), np.dtype(np.float16))


def test_safetensors_bfloat16_is_read_as_float32(tmp_path):
    import json
    values = np.array([[1.5, -2.0], [0.0, 3.25]], np.float32)   # exact in bfloat16: the upper 16 bits
    data = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, len(data)]}}).encode()
    path = tmp_path / "w.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)
    assert checkpoint_index(path)["w"] == ((2, 2), np.dtype(np.float32))
    got = read_checkpoint(path)["w"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, values)


def test_a_truncated_safetensors_file_is_a_checkpoint_error(tmp_path):
    import safetensors.numpy
    path = tmp_path / "w.safetensors"
    safetensors.numpy.save_file({"a": np.ones((64, 64), np.float32)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"w\.safetensors: not a readable \.safetensors checkpoint"):
        read_checkpoint(path)


def _peak_rss_mib():
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def test_streaming_a_safetensors_file_holds_one_tensor_not_the_file(tmp_path):
    """safetensors' ``safe_open`` maps the file, and every tensor read stays resident until it is closed: streaming
    a 160 MiB file peaked 160 MiB above the start. Plain reads hold one 16 MiB tensor at a time."""
    import safetensors.numpy
    path = tmp_path / "w.safetensors"
    safetensors.numpy.save_file({f"t{i}": np.full((4096, 1024), i, np.float32) for i in range(10)}, str(path))
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")   # resets VmHWM to the current RSS
    except OSError:
        pytest.skip("peak RSS cannot be reset on this system (Linux /proc/self/clear_refs)")
    start = _peak_rss_mib()
    for i, (name, value) in enumerate(modeling_utils.iter_checkpoint(path)):
        assert name == f"t{i}" and value[0, 0] == i
        del value
    assert _peak_rss_mib() - start < 80

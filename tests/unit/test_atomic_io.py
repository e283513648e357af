"""atomic_write and the checkpoint files written/read through it: a writer that writes another name or nothing
never replaces the target, no temporary is left behind, written files get the mode of a plain open(), wrong
checkpoint suffixes are refused, and unreadable or mismatching checkpoints are one-line CheckpointErrors."""
import os
import stat

import mindspore as ms
import numpy as np
import pytest
from safetensors.numpy import save_file

import mindram
from mindram.errors import CheckpointError, MindramError
from mindram.models import modeling_utils
from mindram.models.modeling_utils import checkpoint_names, read_checkpoint, write_checkpoint
from mindram.utils.io import atomic_write
from tests.unit.test_clip_model import tiny

PARAMS = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(5, np.float32)}


def entries(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def umask_027():
    """Run with umask 027 (0o666 & ~0o027 = 0o640, unlike both 0o600 and 0o644)."""
    previous = os.umask(0o027)
    yield 0o640
    os.umask(previous)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_replaces_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "out.json"
    with atomic_write(target) as tmp:
        assert os.path.dirname(tmp) == str(target.parent) and os.path.basename(tmp).startswith(".out.json.")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("{}")
    assert target.read_text() == "{}" and entries(target.parent) == ["out.json"]


@pytest.mark.parametrize("writer", ["appends_suffix", "writes_nothing", "raises_after_partial_write"])
def test_failed_writer_keeps_old_file_and_removes_temporaries(tmp_path, writer):
    target = tmp_path / "weights"
    target.write_text("old")
    with pytest.raises((MindramError, OSError)):
        with atomic_write(target) as tmp:
            if writer == "appends_suffix":  # what mindspore.save_checkpoint does to a name without .ckpt
                with open(tmp + ".ckpt", "wb") as f:
                    f.write(b"tensors")
            elif writer == "raises_after_partial_write":
                with open(tmp, "wb") as f:
                    f.write(b"half")
                with open(tmp + ".part", "wb") as f:  # a writer's own scratch file derived from the name
                    f.write(b"x")
                raise OSError("disk full")
    assert target.read_text() == "old"
    assert entries(tmp_path) == ["weights"]


def test_empty_file_only_when_allowed(tmp_path):
    with pytest.raises(MindramError, match="empty"):
        with atomic_write(tmp_path / "errors.jsonl"):
            pass
    assert entries(tmp_path) == []
    with atomic_write(tmp_path / "errors.jsonl", allow_empty=True):
        pass
    assert (tmp_path / "errors.jsonl").read_bytes() == b""


def test_failing_check_blocks_the_rename(tmp_path):
    def check(tmp):
        raise CheckpointError(f"{tmp}: not what was meant")
    with pytest.raises(CheckpointError, match="not what was meant"):
        with atomic_write(tmp_path / "x.bin", check=check) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"data")
    assert entries(tmp_path) == []


def test_mode_is_that_of_a_plain_open(tmp_path, umask_027):
    with open(tmp_path / "plain.log", "w", encoding="utf-8") as f:
        f.write("x")
    assert mode(tmp_path / "plain.log") == umask_027
    with atomic_write(tmp_path / "metrics.json") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("{}")
    with atomic_write(tmp_path / "readonly.bin") as tmp:
        with open(tmp, "wb") as f:
            f.write(b"x")
        os.chmod(tmp, 0o400)  # as mindspore.save_checkpoint leaves its files
    assert mode(tmp_path / "metrics.json") == umask_027 and mode(tmp_path / "readonly.bin") == umask_027


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_checkpoint_round_trip_mode_and_names(tmp_path, umask_027, suffix):
    path = write_checkpoint(PARAMS, tmp_path / f"w{suffix}")
    assert entries(tmp_path) == [f"w{suffix}"] and mode(path) == umask_027
    assert sorted(checkpoint_names(path)) == ["a", "b"]
    loaded = read_checkpoint(path)
    for key, value in PARAMS.items():
        np.testing.assert_array_equal(loaded[key], value)


@pytest.mark.parametrize("name", ["weights", "weights.yaml", "weights.ckpt.tmp"])
def test_checkpoint_suffix_is_refused(tmp_path, name):
    with pytest.raises(CheckpointError, match=r"must end with \.ckpt or \.safetensors") as info:
        write_checkpoint(PARAMS, tmp_path / name)
    assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)
    assert entries(tmp_path) == []
    with pytest.raises(CheckpointError, match="must end with"):
        read_checkpoint(tmp_path / name)


def test_written_checkpoint_is_checked_before_it_replaces_the_target(tmp_path, monkeypatch):
    path = write_checkpoint(PARAMS, tmp_path / "w.ckpt")
    real_save = ms.save_checkpoint
    monkeypatch.setattr(ms, "save_checkpoint", lambda items, name: real_save(items[:1], name))  # loses a tensor
    with pytest.raises(CheckpointError, match="finds 1 tensors, expected 2"):
        write_checkpoint({k: v + 1 for k, v in PARAMS.items()}, path)
    np.testing.assert_array_equal(read_checkpoint(path)["a"], PARAMS["a"])  # the old file is intact
    assert entries(tmp_path) == ["w.ckpt"]


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_unreadable_checkpoint_is_a_checkpoint_error_naming_the_file(tmp_path, suffix, damage):
    good = write_checkpoint({"w": np.ones((64, 64), np.float32), "b": np.zeros(3, np.float32)},
                            tmp_path / f"good{suffix}")
    data = good.read_bytes()
    content = {"truncated": data[:len(data) // 2], "random": np.random.default_rng(0).bytes(5000),
               "empty": b""}[damage]
    path = tmp_path / f"{damage}{suffix}"
    path.write_bytes(content)
    for reader in (read_checkpoint, checkpoint_names):
        with pytest.raises(CheckpointError) as info:
            reader(path)
        message = str(info.value)
        assert message.startswith(str(path)) and "\n" not in message, message


def test_ram_checkpoint_into_clip_model_names_file_counts_and_family(tmp_path):
    ram_like = {"label_embed": np.zeros((4, 8), np.float32), "image_proj.weight": np.zeros((8, 8), np.float32),
                "visual_encoder.patch_embed.proj.weight": np.zeros((8, 3, 4, 4), np.float32)}
    path = tmp_path / "ram.safetensors"
    save_file(ram_like, str(path))
    model = mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32")))
    own = len(list(model.get_parameters()))
    with pytest.raises(CheckpointError) as info:
        model.load_weights(path)
    message = str(info.value)
    assert message.startswith(f"{path} does not match CLIPModel (it looks like a RAM checkpoint)")
    assert f"{own} missing" in message and "3 unexpected" in message
    with pytest.raises(CheckpointError, match=f"{path}: not a CLIP ViT checkpoint"):
        mindram.CLIPModel.from_pretrained(path)  # config inferred from the shapes: names the file too


def test_save_pretrained_files_get_the_plain_mode(tmp_path, umask_027):
    model = mindram.CLIPModel(tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32")))
    folder = model.save_pretrained(tmp_path / "saved")
    assert entries(folder) == ["config.yaml", "model.ckpt"]
    assert mode(folder / "model.ckpt") == umask_027 and mode(folder / "config.yaml") == umask_027
    assert sorted(checkpoint_names(folder / "model.ckpt")) == sorted(p.name for p in model.get_parameters())


def test_ckpt_names_are_read_without_the_tensor_data(tmp_path, monkeypatch):
    path = write_checkpoint(PARAMS, tmp_path / "w.ckpt")
    monkeypatch.setattr(modeling_utils.ms, "load_checkpoint", None)  # names come from the framing alone
    assert checkpoint_names(path) == ["a", "b"]


@pytest.mark.parametrize("spelling", ["out.json", "./out.json", "../work/out.json", "~/out.json", "absolute"])
def test_every_path_spelling_is_written_and_leaves_no_temporary(tmp_path, monkeypatch, spelling):
    """A bare name (the current directory), ./, ../, ~ and an absolute path: each is written in place, no
    temporary is left (a bare name's temporary has no directory part: that used to fail after the rename)."""
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    expected = {"out.json": work, "./out.json": work, "../work/out.json": work, "~/out.json": home,
                "absolute": work}[spelling]
    path = str(work / "out.json") if spelling == "absolute" else spelling
    with atomic_write(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("{}")
    assert (expected / "out.json").read_text(encoding="utf-8") == "{}"
    assert entries(expected) == ["out.json"] and not (work / "~").exists()


def test_checkpoint_written_under_a_bare_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_checkpoint(PARAMS, "weights.safetensors")
    assert entries(tmp_path) == ["weights.safetensors"]
    np.testing.assert_array_equal(read_checkpoint(tmp_path / "weights.safetensors")["a"], PARAMS["a"])


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth", ".pdparams"])
def test_foreign_weights_are_told_to_convert_first(tmp_path, monkeypatch, capsys, suffix):
    """PyTorch/Paddle weights given where a MindSpore checkpoint is read: the error gives the convert command
    (it used to suggest renaming the file to .ckpt, which cannot work)."""
    from mindram.export.__main__ import main as export_main
    monkeypatch.chdir(tmp_path)
    (tmp_path / f"ViT-B-32{suffix}").write_bytes(b"PK\x03\x04 not ours")
    with pytest.raises(CheckpointError, match=r"convert_weights/convert_clip\.py --torch_path .*ViT-B-32"):
        read_checkpoint(tmp_path / f"ViT-B-32{suffix}")
    assert export_main(["--model", f"ViT-B-32{suffix}", "--output", "exported"]) == 2
    line = capsys.readouterr().err.strip()
    assert f"python convert_weights/convert_clip.py --torch_path ViT-B-32{suffix} --mindspore_path ViT-B-32.ckpt" \
        in line and "e.g. ViT-B-32.ckpt" not in line and not (tmp_path / "exported").exists()

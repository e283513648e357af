"""convert_weights/convert_clip.py as users run it: a subprocess, torch absent, hostile inputs refused."""
import io
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save_file

import mindram
from mindram.models import convert_utils
from mindram.models.clip import convert
from mindram.models.clip.convert import to_open_clip_state_dict
from tests.conftest import ROOT
from tests.unit.test_clip_model import inputs, tiny

SCRIPT = ROOT / "convert_weights" / "convert_clip.py"
NO_TORCH = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = ['convert_clip.py'] + sys.argv[1:]; "
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")


def run_converter(*args):
    env = dict(os.environ, GLOG_v="3")
    return subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=str(ROOT), timeout=300)


def assert_one_line_error(result, *fragments):
    """Exit code 2, one stderr line (no traceback) containing every fragment, nothing on stdout."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("convert_clip.py: error: ") and not result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def tiny_weights(folder):
    """A tiny open_clip state dict as .safetensors (no torch) and its config."""
    config = tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32"))
    path = folder / "tiny.safetensors"
    save_file(to_open_clip_state_dict(mindram.CLIPModel(config).state_dict()), str(path))
    return path


def test_cli_converts_without_torch_and_reports(tmp_path):
    config = tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32.laion2b_s34b_b79k"))  # GELU: the default
    # an unknown architecture gets OpenAI's 64-wide heads rule: width 32 -> 1 head
    config = config.replace(vision_config=config.vision_config.replace(num_attention_heads=1),
                            text_config=config.text_config.replace(num_attention_heads=1))
    model = mindram.CLIPModel(config)
    weights = to_open_clip_state_dict(model.state_dict())
    weights["attn_mask"] = np.zeros((77, 77), np.float32)
    save_file({"module." + k: v for k, v in weights.items()}, str(tmp_path / "tiny.safetensors"))
    out = tmp_path / "out" / "tiny.ckpt"
    result = run_converter("--torch_path", tmp_path / "tiny.safetensors", "--mindspore_path", out)
    assert result.returncode == 0, result.stderr
    assert "missing keys: none" in result.stdout
    assert "ignored non-parameter entries: ['attn_mask']" in result.stdout
    assert "activation cannot be read" in result.stderr  # open_clip dicts do not say their activation
    loaded = mindram.CLIPModel.from_pretrained(out)
    pixels, ids = inputs(config)
    np.testing.assert_allclose(loaded.get_text_features(ids).asnumpy(), model.get_text_features(ids).asnumpy(),
                               atol=1e-6)
    assert not list(out.parent.glob(".*tmp*")), "no temporary files are left behind"


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cli_refuses_pickle_payload_and_never_runs_it(tmp_path):
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    pickle.dump({"visual.proj": _Payload(marker)}, buffer, protocol=2)
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/data.pkl", buffer.getvalue())
        zf.writestr("evil/version", "3\n")
    out = tmp_path / "evil.ckpt"
    result = run_converter("--torch_path", path, "--mindspore_path", out)
    assert_one_line_error(result, "refused to load global")
    assert "system" in result.stderr
    assert not marker.exists() and not out.exists()


def test_cli_rejects_wrong_model_name(tmp_path):
    result = run_converter("--torch_path", tiny_weights(tmp_path), "--mindspore_path", tmp_path / "x.ckpt",
                           "--model_name", "clip_vit_l_14")
    assert_one_line_error(result, "do not have the shapes of 'clip_vit_l_14'")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_cli_unreadable_input(tmp_path, content):
    path = tmp_path / "broken.bin"
    path.write_bytes(content)
    result = run_converter("--torch_path", path, "--mindspore_path", tmp_path / "x.ckpt")
    assert_one_line_error(result, "broken.bin")


@pytest.mark.parametrize("output", ["conv/weights", "conv/weights.yaml"])
def test_cli_refuses_an_output_without_a_checkpoint_suffix(tmp_path, output):
    """Was: exit 0 and "converted", a 0-byte ``weights`` and the tensors in a hidden ``.weights.*.tmp.ckpt``;
    with ``weights.yaml`` the config overwrote the checkpoint."""
    result = run_converter("--torch_path", tiny_weights(tmp_path), "--mindspore_path", tmp_path / output)
    assert_one_line_error(result, str(tmp_path / output), ".ckpt or .safetensors")
    assert not (tmp_path / "conv").exists()


@pytest.mark.parametrize("case", ["missing_input", "parent_is_a_file", "unknown_model_name"])
def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, case):
    weights, out = tiny_weights(tmp_path), tmp_path / "out" / "w.ckpt"
    args = ["--torch_path", weights, "--mindspore_path", out]
    if case == "missing_input":
        args[1], expected = tmp_path / "nope.pt", str(tmp_path / "nope.pt")
    elif case == "parent_is_a_file":
        (tmp_path / "out").write_text("a file")
        expected = f"{tmp_path / 'out'} is a file, not a directory"
    else:
        args += ["--model_name", "clip_vit_zz_99"]
        expected = "unknown clip model 'clip_vit_zz_99'"
    assert_one_line_error(run_converter(*args), expected)
    assert not out.exists()


def in_process(capsys, *args):
    """``(exit code, stdout, error lines)`` of the converter's ``main`` run in this process (stderr lines
    other than the error line are the warnings logged before it)."""
    code = convert.main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, [line for line in captured.err.splitlines() if ": error: " in line]


def test_cli_never_replaces_a_foreign_config_and_reruns_cleanly(tmp_path, capsys):
    weights, out = tiny_weights(tmp_path), tmp_path / "conv" / "w.ckpt"
    (tmp_path / "conv").mkdir()
    (tmp_path / "conv" / "w.yaml").write_text("my: notes\n")
    code, stdout, err = in_process(capsys, "--torch_path", weights, "--mindspore_path", out)
    assert code == 2 and len(err) == 1 and "conv/w.yaml: exists and holds another config" in err[0]
    assert "--overwrite" in err[0] and not stdout
    assert (tmp_path / "conv" / "w.yaml").read_text() == "my: notes\n" and sorted(
        p.name for p in (tmp_path / "conv").iterdir()) == ["w.yaml"]  # no checkpoint written either
    code, stdout, _ = in_process(capsys, "--torch_path", weights, "--mindspore_path", out, "--overwrite")
    assert code == 0 and stdout.startswith("converted")
    code, stdout, _ = in_process(capsys, "--torch_path", weights, "--mindspore_path", out)  # its own config: fine
    assert code == 0 and stdout.startswith("converted")
    assert mindram.CLIPConfig.from_yaml(tmp_path / "conv" / "w.yaml").projection_dim == 16


def test_cli_refuses_to_write_over_its_input(tmp_path, capsys):
    weights = tiny_weights(tmp_path)
    before = weights.read_bytes()
    code, stdout, err = in_process(capsys, "--torch_path", weights, "--mindspore_path", weights)
    assert code == 2 and len(err) == 1 and "is the input" in err[0] and not stdout
    assert weights.read_bytes() == before


def test_cli_reports_success_only_after_re_reading_the_checkpoint(tmp_path, capsys, monkeypatch):
    real_write = convert_utils.write_checkpoint

    def loses_a_tensor(params, path):  # a writer that reports success but drops a tensor
        return real_write(dict(list(params.items())[1:]), path)
    monkeypatch.setattr(convert_utils, "write_checkpoint", loses_a_tensor)
    out = tmp_path / "w.safetensors"
    code, stdout, err = in_process(capsys, "--torch_path", tiny_weights(tmp_path), "--mindspore_path", out)
    assert code == 2 and not stdout and len(err) == 1
    assert "re-reading the written checkpoint finds 61 tensors, expected 62" in err[0]
    assert not out.exists() and not out.with_suffix(".yaml").exists()


def test_cli_usage_error_and_debug_flag(tmp_path, capsys):
    code, _, err = in_process(capsys, "--torch_path", tmp_path / "x.pt")
    assert code == 2 and len(err) == 1 and "--mindspore_path" in err[0]
    with pytest.raises(FileNotFoundError):  # --debug: the exception itself, for a traceback
        convert.main(["--torch_path", str(tmp_path / "x.pt"), "--mindspore_path", str(tmp_path / "x.ckpt"),
                      "--debug"])

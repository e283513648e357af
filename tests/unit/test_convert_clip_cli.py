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
    assert result.returncode != 0
    assert "UnsafeCheckpointError" in result.stderr and "system" in result.stderr
    assert not marker.exists() and not out.exists()


def test_cli_rejects_wrong_model_name(tmp_path):
    config = tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32"))
    save_file(to_open_clip_state_dict(mindram.CLIPModel(config).state_dict()), str(tmp_path / "tiny.safetensors"))
    result = run_converter("--torch_path", tmp_path / "tiny.safetensors", "--mindspore_path", tmp_path / "x.ckpt",
                           "--model_name", "clip_vit_l_14")
    assert result.returncode != 0
    assert "do not have the shapes of 'clip_vit_l_14'" in result.stderr


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_cli_unreadable_input(tmp_path, content):
    path = tmp_path / "broken.bin"
    path.write_bytes(content)
    result = run_converter("--torch_path", path, "--mindspore_path", tmp_path / "x.ckpt")
    assert result.returncode != 0 and "broken.bin" in result.stderr

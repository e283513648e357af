"""First contact: every command answers ``--help`` and a usage error without importing MindSpore, torch, ONNX
or Gradio (the import of MindSpore alone is 5-15 s on 2 cores; the answer is now well under 2 s). The probe
makes those imports fail, so a command that still needs them before parsing its arguments fails this test."""
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# (how it is started, a usage error it must report as one line)
COMMANDS = {
    "run_mindformer.py": ["--run_mode", "nope"],
    "convert_weights/convert_clip.py": ["--torch_path"],
    "convert_weights/convert_ram.py": ["--torch_path"],
    "scripts/export_embeddings.py": ["--batch_size", "x"],
    "scripts/make_shards.py": ["--shard_size", "x"],
    "mindram.export": ["--format", "nope"],
    "mindram.download": ["--nope"],
    "mindram.calibrate": ["--nope"],
    "mindram.compat.paddleclas": [],
    "mindram.app": ["--port", "x"],
    "mindram.extract_teacher_features": ["--nope"],
}

PROBE = """
import runpy, sys
HEAVY = ("mindspore", "torch", "onnx", "onnxruntime", "gradio", "open_clip")

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{name} imported before the arguments were parsed")
        return None

sys.meta_path.insert(0, Refuse())
target, argv = sys.argv[1], sys.argv[2:]
sys.argv = [target, *argv]
if target.endswith(".py"):
    runpy.run_path(target, run_name="__main__")
else:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def start(command, *args):
    target = str(ROOT / command) if command.endswith(".py") else command
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", PROBE, target, *args], capture_output=True, text=True,
                          cwd=str(ROOT), env=env, timeout=120)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_needs_no_heavy_import(command):
    result = start(command, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_usage_error_needs_no_heavy_import(command):
    result = start(command, *COMMANDS[command])
    assert result.returncode == 2, result.stderr[-2000:]
    assert "imported before the arguments were parsed" not in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "error:" in result.stderr.strip().splitlines()[-1], result.stderr

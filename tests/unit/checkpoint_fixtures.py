"""Helpers of the checkpoint reader tests: a MindSpore ``.ckpt`` written by hand (the protobuf framing of
``checkpoint.proto``), and a light Python child process that imports the torch-free readers without the rest of
mindram (no MindSpore import), so a test can measure its peak memory or survive a crash of the reader."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# mindram/__init__ imports every model (and MindSpore); the readers need only mindram.checkpoint/errors/utils.
LIGHT_PRELUDE = f"""
import sys, types
sys.modules['torch'] = None
_pkg = types.ModuleType('mindram')
_pkg.__path__ = [{str(REPO_ROOT / 'mindram')!r}]
sys.modules['mindram'] = _pkg
"""


def run_light(script, cwd, timeout=120):
    """``(returncode, stdout, stderr)`` of ``script`` run after :data:`LIGHT_PRELUDE` in a child Python."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", LIGHT_PRELUDE + script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def last_json(stdout):
    """The JSON object on the last line of a child's output."""
    return json.loads(stdout.strip().splitlines()[-1])


def varint(value):
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def field(number, payload):
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def ckpt_bytes(tensors):
    """A ``.ckpt`` holding ``{tag: (dims, tensor_type, content bytes)}``."""
    out = b""
    for tag, (dims, tensor_type, content) in tensors.items():
        tensor = b"".join(varint(1 << 3) + varint(d) for d in dims)
        tensor += field(2, tensor_type.encode()) + field(3, content)
        out += field(1, field(1, tag.encode()) + field(2, tensor))
    return out

"""Importing mindram changes no process-wide setting (docs/global_state.md lists what mindram calls do touch)."""
import json
import os
import subprocess
import sys

from tests.conftest import ROOT

_IMPORT_PROBE = """
import json, os
import mindspore as ms
env, context = dict(os.environ), {k: ms.get_context(k) for k in ("mode", "device_target")}
import mindram
changed = sorted(k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k))
print(json.dumps({"changed": changed, "before": context,
                  "after": {k: ms.get_context(k) for k in ("mode", "device_target")}}))
"""


def test_import_mindram_changes_no_process_settings():
    env = {k: v for k, v in os.environ.items() if k != "GLOG_v"}  # unset: importing mindram must not set it
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["changed"] == [], f"import mindram changed these environment variables: {result['changed']}"
    assert result["after"] == result["before"]

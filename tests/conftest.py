"""Shared test setup: a private MINDRAM_HOME, the repository on sys.path, reference-stack helpers."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GLOG_v", "3")


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory, monkeypatch):
    """Tests never read or write the user's ~/.cache/mindram."""
    monkeypatch.setenv("MINDRAM_HOME", str(tmp_path_factory.getbasetemp() / "mindram_home"))

"""Shared test setup: a private MINDRAM_HOME and HOME, the repository on sys.path, markers by folder, and a
guard that the session's own code never writes mindram's default cache (``~/.cache/mindram``).

Everything a test reads lives in this repository (``tests/fixtures``); nothing outside it is read.
"""
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(ROOT))
# MindSpore's C++ INFO/WARNING lines stay off in test output (mindram itself leaves GLOG_v alone).
os.environ.setdefault("GLOG_v", "3")

USER_CACHE = Path.home() / ".cache" / "mindram"   # mindram_home()'s default for the user running the tests

# tests/<folder>/… → marker applied to every test in that folder
FOLDER_MARKERS = {"parity": "parity", "st": "st"}
# Marked ``slow``: about 3 s or more each on 2 idle cores (pytest --durations); a parametrized test is named once.
SLOW_TESTS = frozenset({
    "tests/parity/test_clip_parity.py::test_features_match_open_clip",
    "tests/parity/test_clip_parity.py::test_logits_and_loss_match_open_clip",
    "tests/parity/test_ram_parity.py::test_logits_and_tags_match_reference",
    "tests/st/test_run_mindformer.py::test_train_eval_predict",
    "tests/st/test_run_weights.py::test_the_flickr8k_config_starts_from_openai_weights_and_stops_without_them",
    "tests/st/test_run_weights.py::test_cli_from_a_relative_path_follows_the_weights_and_logs_them_first",
    "tests/st/test_run_mindformer_tagging.py::test_train_eval_predict",
    "tests/unit/test_kernels.py::test_build_cache_is_reused_across_processes",
    "tests/unit/test_ram_model.py::test_full_size_ram_plus_has_the_reference_parameters",
    "tests/unit/test_ram_model.py::test_save_and_load_pretrained",
    "tests/unit/test_swin.py::test_swin_l_384_has_the_reference_parameters",
})


def tree_state(folder):
    """``{relative path: (mtime_ns, size)}`` of ``folder`` and everything under it; None if it does not exist."""
    folder = Path(folder)
    if not folder.exists():
        return None
    state = {}
    for path in [folder, *folder.rglob("*")]:
        try:
            info = path.lstat()
        except FileNotFoundError:  # removed while listing
            continue
        state[str(path.relative_to(folder))] = (info.st_mtime_ns, info.st_size)
    return state


_session = {}


def pytest_configure(config):  # pylint: disable=unused-argument
    """Point MINDRAM_HOME at a session temp dir before collection: test modules may build things (kernels,
    caches) at import time, before any fixture runs. (A hook, not module code: test modules import this file
    a second time as ``tests.conftest``.)"""
    _session["dir"] = Path(tempfile.mkdtemp(prefix="mindram-tests-"))
    _session["home"] = _session["dir"] / "mindram_home"
    _session["previous"] = os.environ.get("MINDRAM_HOME")
    os.environ["MINDRAM_HOME"] = str(_session["home"])
    # HOME too: whatever the tests (and the commands they run) would write under ~ lands in the session's
    # folder, never in the user's; and the guard below watches that folder, which no other process writes
    # (watching the user's ~/.cache/mindram failed whole sessions whenever another process wrote there)
    _session["previous_home"] = os.environ.get("HOME")
    (_session["dir"] / "home").mkdir()
    os.environ["HOME"] = str(_session["dir"] / "home")


def pytest_unconfigure(config):  # pylint: disable=unused-argument
    if "dir" not in _session:
        return
    shutil.rmtree(_session.pop("dir"), ignore_errors=True)
    for name, key in (("MINDRAM_HOME", "previous"), ("HOME", "previous_home")):
        previous = _session.pop(key)
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def guarded_cache():
    """mindram's default cache as the session's code sees it (``~/.cache/mindram`` under the session's HOME)."""
    return Path(os.environ["HOME"]) / ".cache" / "mindram"


def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
    """Mark the tests under tests/parity and tests/st with ``parity`` / ``st``, and those of SLOW_TESTS ``slow``."""
    for item in items:
        try:
            path = Path(item.path).resolve().relative_to(ROOT)
        except ValueError:
            continue
        if len(path.parts) > 2 and path.parts[0] == "tests" and path.parts[1] in FOLDER_MARKERS:
            item.add_marker(FOLDER_MARKERS[path.parts[1]])
        if f"{path.as_posix()}::{getattr(item, 'originalname', item.name)}" in SLOW_TESTS:
            item.add_marker("slow")


@pytest.fixture(scope="session", autouse=True)
def _user_cache_untouched():
    """Fail the session if its code created or modified ``~/.cache/mindram`` (mindram_home()'s default: a test
    that lost its private MINDRAM_HOME). HOME is the session's, so only the session itself can write there."""
    cache = guarded_cache()
    before = tree_state(cache)
    yield
    after = tree_state(cache)
    if after != before:
        changed = sorted(set((after or {}).items()) ^ set((before or {}).items()))
        pytest.fail(f"the test session created or modified {cache}: {[path for path, _ in changed][:10]}; "
                    "tests must write only under tmp_path / $MINDRAM_HOME", pytrace=False)


@pytest.fixture
def mode(request):
    """Run the test in the MindSpore execution mode it is parametrized with (``indirect=True``), the previous
    mode after."""
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    previous = ms.get_context("mode")
    ms.set_context(mode=request.param)
    yield request.param
    ms.set_context(mode=previous)


@pytest.fixture
def kernel_lib():
    """Path of mindram's C++ kernel library, built on first use (into the session's $MINDRAM_HOME, never at
    collection time); skips the test when the kernels are disabled or cannot be built here."""
    from mindram.layers import kernels  # pylint: disable=import-outside-toplevel
    if kernels.kernels_disabled() or kernels.kernel_library() is None:
        pytest.skip("C++ kernels unavailable (no compiler or disabled)")
    return kernels.kernel_library()


@pytest.fixture(scope="session", autouse=True)
def _session_mode():
    """MindSpore's execution mode when the session starts (before any module-scoped fixture runs)."""
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    return ms.get_context("mode")


@pytest.fixture(autouse=True)
def _execution_mode_restored(_session_mode):
    """A test that leaves MindSpore's execution mode other than the session's (also from a module-scoped
    fixture) fails, and the mode is put back: with ``--dist loadfile`` the next file on the same worker would
    otherwise run in that mode (a PyNative test's lambda under GRAPH_MODE fails to parse, depending only on
    which files share a worker)."""
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    yield
    after = ms.get_context("mode")
    if after != _session_mode:
        ms.set_context(mode=_session_mode)
        pytest.fail(f"the test left MindSpore's execution mode at {after} (the session's is {_session_mode}); "
                    "restore it (the `mode` fixture does)", pytrace=False)


@pytest.fixture(autouse=True)
def _private_home(monkeypatch):
    """Tests never read or write the user's ~/.cache/mindram, and never reach the network: a missing
    checkpoint is the offline error, not a download (tests/unit/test_download.py serves its own)."""
    monkeypatch.setenv("MINDRAM_HOME", str(_session["home"]))
    monkeypatch.setenv("MINDRAM_OFFLINE", "1")
    monkeypatch.delenv("MINDRAM_CATALOG", raising=False)

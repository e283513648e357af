"""The test suite's own setup (tests/conftest.py, pytest.ini): a private MINDRAM_HOME from collection on, the
guard on ~/.cache/mindram, markers by folder and by name, strict marker registration."""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import FOLDER_MARKERS, ROOT, SLOW_TESTS, USER_CACHE, pytest_collection_modifyitems, tree_state

HOME_AT_COLLECTION = os.environ.get("MINDRAM_HOME")


def test_mindram_home_is_private_from_collection_on():
    """Module-level code (collection time) already sees the session's temporary MINDRAM_HOME."""
    assert HOME_AT_COLLECTION == os.environ["MINDRAM_HOME"]
    home = Path(HOME_AT_COLLECTION).resolve()
    assert home.parent.name.startswith("mindram-tests-") and home.is_relative_to(Path(tempfile.gettempdir()).resolve())
    assert not home.is_relative_to(USER_CACHE.resolve())


def test_tree_state_sees_creation_and_modification(tmp_path):
    """The session guard on ~/.cache/mindram compares these snapshots."""
    folder = tmp_path / "cache"
    assert tree_state(folder) is None
    (folder / "kernels").mkdir(parents=True)
    created = tree_state(folder)
    assert created is not None and "kernels" in created
    (folder / "kernels" / "lib.so").write_bytes(b"x")
    modified = tree_state(folder)
    assert modified != created and "kernels/lib.so" in modified
    assert tree_state(folder) == modified


class FakeItem:
    """Just what pytest_collection_modifyitems reads from a collected test."""

    def __init__(self, path, name):
        self.path, self.originalname, self.name, self.markers = ROOT / path, name, f"{name}[case]", []

    def add_marker(self, marker):
        self.markers.append(marker)


def test_markers_by_folder_and_slow_list():
    items = [FakeItem("tests/parity/test_clip_parity.py", "test_features_match_open_clip"),
             FakeItem("tests/st/test_run_mindformer.py", "test_config_error_is_reported_before_work"),
             FakeItem("tests/unit/test_swin.py", "test_swin_l_384_has_the_reference_parameters"),
             FakeItem("tests/unit/test_swin.py", "test_ram_configs")]
    pytest_collection_modifyitems(None, items)
    assert [item.markers for item in items] == [["parity", "slow"], ["st"], ["slow"], []]


@pytest.mark.parametrize("entry", sorted(SLOW_TESTS))
def test_slow_list_names_existing_tests(entry):
    path, name = entry.split("::")
    assert Path(path).parts[1] in {*FOLDER_MARKERS, "unit"}
    assert f"def {name}(" in (ROOT / path).read_text(encoding="utf-8"), f"{entry} no longer exists: update SLOW_TESTS"


def test_unregistered_markers_are_refused(tmp_path):
    test = tmp_path / "test_marks.py"
    test.write_text("import pytest\n\n@pytest.mark.slow\ndef test_a():\n    pass\n\n"
                    "@pytest.mark.sloww\ndef test_b():\n    pass\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pytest.ini"), "--rootdir", str(tmp_path),
                             "--collect-only", "-q", "-p", "no:cacheprovider", str(test)],
                            capture_output=True, text=True, timeout=120, cwd=str(tmp_path), check=False)
    assert result.returncode != 0 and "'sloww' not found in `markers` configuration option" in result.stdout
    assert "'slow' not found" not in result.stdout


def run_session(tmp_path, test_source, **extra_env):
    """Run a one-file pytest session with this suite's conftest and pytest.ini, HOME in ``tmp_path``."""
    (tmp_path / "home").mkdir(exist_ok=True)
    test = tmp_path / "test_session.py"
    test.write_text(test_source)
    env = dict(os.environ, HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT), **extra_env)
    env.pop("MINDRAM_HOME")
    return subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pytest.ini"), "--rootdir", str(tmp_path),
                           "-p", "tests.conftest", "-q", "-p", "no:cacheprovider", str(test)],
                          capture_output=True, text=True, timeout=120, cwd=str(tmp_path), env=env, check=False)


def test_session_fails_when_it_writes_the_user_cache(tmp_path):
    writes = ("from pathlib import Path\n\n"
              "def test_writes_user_cache():\n"
              "    folder = Path.home() / '.cache' / 'mindram' / 'kernels'\n"
              "    folder.mkdir(parents=True)\n")
    result = run_session(tmp_path, writes)
    assert result.returncode != 0 and "the test session created or modified" in result.stdout, result.stdout
    assert "'kernels'" in result.stdout
    # a cache the user had before the session is fine as long as the session leaves it alone
    result = run_session(tmp_path, "import os\n\ndef test_home():\n    assert 'mindram-tests-' in os.environ['MINDRAM_HOME']\n")
    assert result.returncode == 0, result.stdout


def test_other_writers_of_the_user_cache_do_not_fail_the_session(tmp_path):
    """Another process (a demo run beside the tests) writing the user's ~/.cache/mindram during the session is
    not the session's doing: the guard watches the session's own HOME, which only the session writes."""
    writes = ("import os\nfrom pathlib import Path\n\n"
              "def test_someone_else_writes_the_user_cache():\n"
              "    assert Path.home() != Path(os.environ['USER_HOME'])\n"
              "    (Path(os.environ['USER_HOME']) / '.cache' / 'mindram' / 'kernels').mkdir(parents=True)\n")
    result = run_session(tmp_path, writes, USER_HOME=str(tmp_path / "home"))
    assert result.returncode == 0, result.stdout
    assert (tmp_path / "home" / ".cache" / "mindram" / "kernels").is_dir()


def test_home_is_private_to_the_session():
    assert Path.home().parent.name.startswith("mindram-tests-") and Path.home().name == "home"

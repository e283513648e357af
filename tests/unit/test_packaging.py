"""What `pip install mindram` puts on disk: every file of the source package, data and notices included."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _files(root, under="."):
    return {path.relative_to(root).as_posix() for path in (root / under).rglob("*") if path.is_file()}


def test_build_installs_every_file_of_the_package(tmp_path):
    """The setup's own build step (what a wheel holds under mindram/) run on a copy of the tree: the tag lists,
    configs, kernel sources, LICENSE/NOTICE and the data provenance README all go along with the code."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    # the package's source tree, without what Python or gradio write beside the sources
    shutil.copytree(ROOT / "mindram", source / "mindram",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyi"))
    expected = _files(source, "mindram")   # before the build, which may write beside the sources
    build = tmp_path / "build"
    result = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(build)], cwd=source,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    built = _files(build)
    assert len(expected) > 100
    assert sorted(expected - built) == []
    assert sorted(built - expected) == []

"""What `pip install mindram` puts on disk: every file of the source package, data and notices included."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _source_files():
    """Every file of the package's source tree, except what Python or gradio write beside the sources."""
    files = set()
    for path in (ROOT / "mindram").rglob("*"):
        relative = path.relative_to(ROOT)
        if not path.is_file() or "__pycache__" in relative.parts or path.suffix in (".pyc", ".pyi"):
            continue
        files.add(relative.as_posix())
    return files


def test_build_installs_every_file_of_the_package(tmp_path):
    """The setup's own build step (what a wheel holds under mindram/) run on a copy of the tree: the tag lists,
    configs, kernel sources, LICENSE/NOTICE and the data provenance README all go along with the code."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "mindram", source / "mindram",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyi"))
    build = tmp_path / "build"
    result = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(build)], cwd=source,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    built = {path.relative_to(build).as_posix() for path in build.rglob("*") if path.is_file()}
    expected = _source_files()
    assert len(expected) > 100
    assert sorted(expected - built) == []
    assert sorted(built - expected) == []

"""File helpers: atomic writes and the local model directory."""
import contextlib
import os
import tempfile
from pathlib import Path


def mindram_home() -> Path:
    """Directory holding converted checkpoints and caches (``$MINDRAM_HOME``, default ``~/.cache/mindram``)."""
    return Path(os.environ.get("MINDRAM_HOME", Path.home() / ".cache" / "mindram")).expanduser()


@contextlib.contextmanager
def atomic_write(path):
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    A crash or exception leaves any previous file at ``path`` untouched and removes the temporary.
    Yields the temporary *path* (a ``str``) so that libraries that insist on writing by file name
    (``mindspore.save_checkpoint``) can be used; the temporary keeps the target's suffix because
    some writers append their own suffix otherwise.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=str(path.parent))
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise

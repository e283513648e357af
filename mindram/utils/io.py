"""File helpers: atomic writes and the local model directory."""
import contextlib
import os
import secrets
from pathlib import Path

from ..errors import MindramError


def mindram_home() -> Path:
    """Directory holding converted checkpoints and caches (``$MINDRAM_HOME``, default ``~/.cache/mindram``)."""
    return Path(os.environ.get("MINDRAM_HOME", Path.home() / ".cache" / "mindram")).expanduser()


HUB_ENDPOINT = "https://huggingface.co"


def hub_endpoint() -> str:
    """Base URL of the Hugging Face hub: ``$MINDRAM_ENDPOINT``, else ``$HF_ENDPOINT``, else huggingface.co."""
    return (os.environ.get("MINDRAM_ENDPOINT") or os.environ.get("HF_ENDPOINT") or HUB_ENDPOINT).rstrip("/")


def _create_temporary(path):
    """Create an empty, new temporary file beside ``path``; return its name and the mode a plain
    ``open(path, "w")`` gives a new file (``0o666`` less the umask, read back from the file just created,
    so the process umask is never changed). The name keeps ``path``'s suffix: some writers append their
    own suffix to a name without it."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        try:
            return tmp, os.fstat(fd).st_mode & 0o777
        finally:
            os.close(fd)
    raise FileExistsError(f"no free temporary name beside {path}")


def _remove_temporaries(tmp, suffix):
    """Remove ``tmp`` and whatever a writer derived from its unique name (``<tmp>.ckpt``, ``<stem>.tmp`` …)."""
    directory, stem = os.path.split(tmp[: len(tmp) - len(f".tmp{suffix}")])
    with os.scandir(directory or os.curdir) as entries:   # a bare name's temporary has no directory part
        leftovers = [e.path for e in entries if e.name.startswith(f"{stem}.")]
    for leftover in leftovers:
        with contextlib.suppress(FileNotFoundError):
            os.remove(leftover)


def _check_written(tmp, path, allow_empty, check):
    """Raise unless the writer left data in ``tmp`` (and ``check(tmp)`` passes)."""
    if not os.path.isfile(tmp):
        raise MindramError(f"{path}: the writer did not write its temporary file {tmp} (it may have written to "
                           f"another name); {path} is left unchanged")
    if not allow_empty and os.path.getsize(tmp) == 0:
        raise MindramError(f"{path}: the writer left its temporary file empty (it may have written to another "
                           f"name); {path} is left unchanged")
    if check is not None:
        check(tmp)


@contextlib.contextmanager
def atomic_write(path, check=None, allow_empty=False):
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds and wrote it.

    ``path`` may be bare (``model.ckpt``: the current directory), relative (``./``, ``../``), start with ``~``
    or be absolute.

    Yields the temporary *path* (a ``str``) so that libraries that insist on writing by file name
    (``mindspore.save_checkpoint``) can be used. After the block the temporary must exist and be non-empty
    (unless ``allow_empty``) and ``check(tmp)``, when given, must return without raising; then it gets the
    mode a plain ``open(path, "w")`` would give (``0o666`` less the umask; writers such as MindSpore make
    their files read-only) and replaces ``path``. On any failure ``path`` is untouched, the error propagates
    (:class:`~mindram.errors.MindramError` for a temporary that was not written) and no temporary file is
    left behind, including names a writer derived from the temporary's.
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, mode = _create_temporary(path)
    try:
        yield tmp
        _check_written(tmp, path, allow_empty, check)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        _remove_temporaries(tmp, path.suffix)

"""Pretrained weights on demand: download a catalog record's source, verify it, convert it, cache it.

:func:`ensure_checkpoint` is what ``from_pretrained`` calls when ``$MINDRAM_HOME/<family>/<file>`` is missing:

1. an exclusive lock (``fcntl.flock`` on ``<checkpoint>.lock``) so that concurrent processes asking for the
   same weights download once; the checkpoint is looked for again once the lock is held;
2. the record's ``sources`` are tried in order: a Hugging Face hub file
   (``{$MINDRAM_ENDPOINT or $HF_ENDPOINT or https://huggingface.co}/{repo}/resolve/{revision}/{filename}``) or a
   direct URL, downloaded with ``urllib`` into ``$MINDRAM_HOME/<family>/downloads/<stem>--<filename>.part``
   with resume (HTTP ``Range``), timeouts, a minimum rate per attempt, retries of what can pass (timeouts, resets,
   HTTP 5xx/408/429) and a tqdm bar; a host that cannot be reached (its name does not resolve, the connection is
   refused, no route) fails at once with the missing-checkpoint message of offline mode; a body longer than the
   catalog's ``size`` is cut off when it passes it;
3. the size and sha256 are verified: the catalog's values, else the hub's ``X-Linked-Etag``/``ETag`` when it
   is a 64-hex sha256 (as ``huggingface_hub`` does), else the sha256 is computed and logged. A mismatch
   deletes the partial file and names both hashes;
4. the verified file is converted by the caller's ``convert(kind)`` — the family converter, whose restricted
   unpickler never executes pickled code and whose save is atomic and re-read — or, for a MindSpore
   checkpoint (``convert: null``), moved into place; the downloaded original is then removed.

``$MINDRAM_OFFLINE=1`` or ``$HF_HUB_OFFLINE=1`` forbid any network access: a missing checkpoint is the
catalog's error (what to fetch, where to put it, the convert command) with the source URL.

This module imports no model: conversion is passed in by the caller (see
:func:`mindram.models.pretrained_weights.converter_for`).
"""
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from pathlib import Path

from .errors import CheckpointError, DownloadError
from .utils.env import env_number
from .utils.io import mindram_home
from .utils.validation import is_sha256

logger = logging.getLogger(__name__)

# $NAME: (default, type, smallest value, meaning); read at every download (docs/limits.md "Downloads")
SETTINGS = {
    "MINDRAM_DOWNLOAD_TIMEOUT": (60.0, float, 0.001, "seconds per socket operation"),
    "MINDRAM_DOWNLOAD_RETRIES": (5, int, 0, "further attempts after a failure that can pass"),
    "MINDRAM_DOWNLOAD_MIN_RATE": (1024.0, float, 0, "bytes/s an attempt must average over each window; 0: no minimum"),
    "MINDRAM_DOWNLOAD_RATE_WINDOW": (60.0, float, 0.001, "seconds over which the minimum rate is measured"),
}
RETRY_BACKOFF_S = 1.0                                                  # doubled after each failed attempt
CHUNK = 1 << 20
_USER_AGENT = "mindram-download/1 (urllib)"
# OSErrors that say the host cannot be reached now: no retry helps within seconds
_UNREACHABLE_ERRNOS = (errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL)


class SourceUnreachableError(DownloadError):
    """The download's host cannot be reached (name resolution failed, connection refused, no route): known at
    once, not retried. ``url`` and ``reason`` (a short phrase) are kept for the caller's message."""

    def __init__(self, message, url, reason):
        super().__init__(message)
        self.url, self.reason = url, reason


class _TooSlow(TimeoutError):
    """An attempt averaged less than the minimum rate over a window (retried, resuming, like a timeout)."""


def setting(name):
    """The value of download setting ``$name`` (:data:`SETTINGS`: its default when unset), checked: a
    :class:`ConfigError` naming the variable for anything but a finite number from the setting's smallest value."""
    default, kind, smallest, meaning = SETTINGS[name]
    return env_number(name, default, kind, smallest, meaning)


def offline():
    """Whether ``$MINDRAM_OFFLINE`` or ``$HF_HUB_OFFLINE`` forbid network access (``1``/``true``/``yes``/``on``)."""
    return any(os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
               for var in ("MINDRAM_OFFLINE", "HF_HUB_OFFLINE"))


def downloads_dir(family):
    """Where sources are downloaded: ``$MINDRAM_HOME/<family>/downloads/``."""
    return mindram_home() / family / "downloads"


def download_path(record, source):
    """The downloaded file of ``source`` for ``record``: named after the converted checkpoint (names of one
    checkpoint share it) and the source file (whose suffix the readers may look at)."""
    return downloads_dir(record.family) / f"{Path(record.file).stem}--{source.filename}"


@contextlib.contextmanager
def file_lock(path):
    """Hold an exclusive ``flock`` on ``path`` (created if needed; left in place: removing it would race)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        if not _try_lock(f):
            logger.info("waiting for another process to fetch the weights (lock %s)", path)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _try_lock(f):
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _etag_sha256(value):
    """The sha256 an ``ETag``/``X-Linked-Etag`` header carries (hub LFS files), else None."""
    if not value:
        return None
    value = value.strip()
    value = value[2:] if value.startswith("W/") else value
    value = value.strip('"').lower()
    return value if is_sha256(value) else None


class _RecordRedirects(urllib.request.HTTPRedirectHandler):
    """Keep the headers of redirect responses: the hub answers ``/resolve/`` with a redirect to its CDN that
    carries ``X-Linked-Etag``/``X-Linked-Size``, which the final response does not."""

    def __init__(self):
        self.headers = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.headers.append(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open(url, start, timeout):
    """``(response, header lookup)`` of a GET of ``url`` from byte ``start`` (a Range request when > 0)."""
    redirects = _RecordRedirects()
    opener = urllib.request.build_opener(redirects)
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    response = opener.open(request, timeout=timeout)

    def header(name):
        for headers in [response.headers, *reversed(redirects.headers)]:
            if headers.get(name):
                return headers.get(name)
        return None
    return response, header


def _total_size(response, header, start):
    """The full size of the file from a 200/206 response, None when the server does not say."""
    if response.status == 206:
        match = re.match(r"bytes (\d+)-\d+/(\d+)", header("Content-Range") or "")
        if match and int(match.group(1)) == start:
            return int(match.group(2))
        return None
    for name, value in (("X-Linked-Size", header("X-Linked-Size")), ("Content-Length", response.headers.get(
            "Content-Length"))):
        if value:
            if not value.strip().isdigit():
                raise DownloadError(f"{response.geturl()}: the server sent {name}: {value[:40]!r}, not a size in "
                                    "bytes")
            return int(value)
    return None


class _RateMeter:
    """Raises :class:`_TooSlow` when fewer than ``min_rate`` bytes/s arrived over a window of ``window`` seconds
    (checked whenever a read returns; a read that returns nothing ends at the socket timeout)."""

    def __init__(self, min_rate, window):
        self.min_rate, self.window = min_rate, window
        self.since, self.bytes = time.monotonic(), 0

    def update(self, count):
        self.bytes += count
        elapsed = time.monotonic() - self.since
        if not self.min_rate or elapsed < self.window:
            return
        if self.bytes < self.min_rate * elapsed:
            raise _TooSlow(f"{self.bytes / elapsed:.0f} bytes/s over {elapsed:.1f} s, below "
                           f"$MINDRAM_DOWNLOAD_MIN_RATE={self.min_rate:g} bytes/s")
        self.since, self.bytes = time.monotonic(), 0


def _size_mismatch(part, message):
    """A :class:`DownloadError` for a body whose size is not the catalog's; the partial file, if any, is deleted
    (its bytes are not those the catalog describes) and the message says so."""
    if part.is_file():
        part.unlink()
        message += f"; the partial file {part} was deleted"
    return DownloadError(message)


def _fetch_once(url, part, name, state, limits):
    """One attempt: append what is missing to ``part``; return when the server has sent everything.

    ``limits``: ``timeout`` (per socket operation), ``min_rate``/``window`` (:class:`_RateMeter`) and ``size``
    (the catalog's, or None): a larger announced size, or a body running past it, is a :class:`DownloadError`."""
    from tqdm.auto import tqdm

    start = part.stat().st_size if part.exists() else 0
    size = limits["size"]
    try:
        response, header = _open(url, start, limits["timeout"])
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # nothing after `start`: the .part may be complete already
            state.setdefault("total", start)
            return
        raise
    with response:
        if start and response.status != 206:
            logger.info("%s: the server ignored the Range request; downloading from the start", url)
            start = 0
        total = _total_size(response, header, start)
        if total is not None:
            state["total"] = total
            if size is not None and total != size:
                raise _size_mismatch(part, f"{url}: the server announces {total} bytes, the catalog records "
                                           f"{size}; nothing was downloaded")
        for key in ("X-Linked-Etag", "ETag"):
            sha = _etag_sha256(header(key))
            if sha:
                state["etag_sha256"] = sha
                break
        read = getattr(response, "read1", response.read)   # read1: returns what one receive brought
        meter, written, passed = _RateMeter(limits["min_rate"], limits["window"]), start, None
        with open(part, "ab" if start else "wb") as out, \
                tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                     disable=None, leave=False) as bar:
            while True:
                block = read(CHUNK)
                if not block:
                    break
                if size is not None and written + len(block) > size:
                    passed = written + len(block)
                    break
                out.write(block)
                written += len(block)
                bar.update(len(block))
                meter.update(len(block))
    if passed is not None:
        raise _size_mismatch(part, f"{url}: the body runs past the {size} bytes the catalog records; cut off at "
                                   f"{passed} bytes")
    got = part.stat().st_size
    if state.get("total") is not None and got < state["total"]:
        raise ConnectionError(f"connection closed after {got} of {state['total']} bytes")


def _unreachable(error):
    """Whether ``error`` (an exception or a URLError's reason) says the host cannot be reached at all."""
    return isinstance(error, socket.gaierror) or (isinstance(error, OSError) and error.errno in _UNREACHABLE_ERRNOS)


def _transient(error):
    """Whether a retry can succeed: timeouts (the minimum rate's too), resets, a connection closed early."""
    return isinstance(error, (TimeoutError, ConnectionError, HTTPException, ssl.SSLEOFError)) and \
        not _unreachable(error)


def _partial_note(part):
    """``; the partial file ... is kept ...`` when ``part`` holds bytes; an empty one is removed (nothing)."""
    if part.is_file() and part.stat().st_size:
        return f"; the partial file {part} ({part.stat().st_size} bytes) is kept and the next download resumes it"
    part.unlink(missing_ok=True)
    return ""


def _unreachable_error(url, error, part):
    host = urllib.parse.urlsplit(url).hostname or url
    why = "its name does not resolve" if isinstance(error, socket.gaierror) else "connection refused" \
        if error.errno == errno.ECONNREFUSED else "no route to it"
    detail = " ".join(str(error).split())
    reason = f"{host} cannot be reached ({why}: {detail}){_partial_note(part)}"
    return SourceUnreachableError(f"cannot download {url}: {reason}", url, reason)


def download(url, target, sha256=None, size=None, name=None):
    """Download ``url`` to ``target`` (verified), resuming ``<target>.part``; return the sha256 checked.

    Retries what can pass (timeouts, an attempt slower than ``$MINDRAM_DOWNLOAD_MIN_RATE``, resets, HTTP
    5xx/408/429; ``$MINDRAM_DOWNLOAD_RETRIES`` more attempts, backoff doubling from ``RETRY_BACKOFF_S``), each
    resuming where the previous one stopped. A host that cannot be reached is a :class:`SourceUnreachableError`
    at once; other failures (HTTP 4xx, TLS) a :class:`DownloadError` at once. The size is checked against
    ``size`` (else the server's; a body running past ``size`` is cut off there), the sha256 against ``sha256``
    (else a sha256 ETag of the server, else computed and logged). On a mismatch the partial file is deleted and
    :class:`DownloadError` names both values.
    """
    limits = {"timeout": setting("MINDRAM_DOWNLOAD_TIMEOUT"), "size": size,
              "min_rate": setting("MINDRAM_DOWNLOAD_MIN_RATE"), "window": setting("MINDRAM_DOWNLOAD_RATE_WINDOW")}
    retries = setting("MINDRAM_DOWNLOAD_RETRIES")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    name = name or target.name
    state = {}
    backoff = RETRY_BACKOFF_S
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, name, state, limits)
            break
        except urllib.error.HTTPError as e:
            if e.code < 500 and e.code not in (408, 429):
                raise DownloadError(f"cannot download {url}: HTTP {e.code} {e.reason}{_partial_note(part)}") from e
            error = e
        except (urllib.error.URLError, HTTPException, OSError) as e:
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            if _unreachable(reason):
                raise _unreachable_error(url, reason, part) from None
            if not _transient(reason):
                if not isinstance(e, urllib.error.URLError):
                    raise   # a local error (the disk), not the network's
                raise DownloadError(f"cannot download {url}: {' '.join(str(reason).split())}"
                                    f"{_partial_note(part)}") from e
            error = e
        if attempt == retries:
            raise DownloadError(f"cannot download {url} after {retries + 1} attempts: "
                                f"{' '.join(str(error).split()) or type(error).__name__}"
                                f"{_partial_note(part)}") from error
        logger.warning("download of %s failed (%s); retrying in %.1f s", url, error, backoff)
        time.sleep(backoff)
        backoff *= 2
    got = part.stat().st_size
    expected_size = size if size is not None else state.get("total")
    if expected_size is not None and got != expected_size:
        part.unlink()
        raise DownloadError(f"{url}: downloaded {got} bytes, expected {expected_size}; the partial file was deleted")
    actual = sha256_of(part)
    expected = sha256 or state.get("etag_sha256")
    if expected is None:
        logger.warning("%s: no published sha256; downloaded file has sha256 %s", url, actual)
    elif actual != expected:
        part.unlink()
        raise DownloadError(f"{url}: sha256 mismatch: expected {expected}, got {actual}; the partial file was "
                            f"deleted")
    os.replace(part, target)
    logger.info("downloaded %s -> %s (%d bytes, sha256 %s)", url, target, got, actual)
    return actual


def fetch_source(record, source):
    """Download (or reuse a verified earlier download of) ``source`` of ``record``; return its path."""
    target = download_path(record, source)
    if target.is_file():
        if source.sha256 is None or sha256_of(target) == source.sha256:
            return target
        logger.warning("%s: sha256 does not match the catalog; downloading it again", target)
        target.unlink()
    download(source.url, target, sha256=source.sha256, size=source.size, name=source.filename)
    return target


def _install(record, source, downloaded, convert):
    """Convert (or move) ``downloaded`` into ``record.checkpoint_path``."""
    checkpoint = record.checkpoint_path
    if source.convert is None:
        os.replace(downloaded, checkpoint)
        return
    if convert is None:
        raise CheckpointError(f"{record.name}: {source.url} needs the {source.convert!r} converter; "
                              f"none was given")
    convert(source.convert)(downloaded, checkpoint, model_name=record.name)
    downloaded.unlink()


def ensure_checkpoint(record, convert=None, do_convert=True):
    """``record.checkpoint_path``, downloading, verifying and converting its source first when it is missing.

    ``convert(kind)`` returns the converter ``f(torch_path, mindspore_path, model_name=...)`` for a source's
    ``convert`` kind. With ``do_convert=False`` the verified download is kept and its path returned.
    Offline, or without sources: the record's missing-checkpoint error.
    """
    checkpoint = record.checkpoint_path
    if checkpoint.is_file():
        return checkpoint
    if not record.sources:
        raise record.missing_checkpoint_error()
    if offline():
        raise record.missing_checkpoint_error(
            reason="Offline ($MINDRAM_OFFLINE/$HF_HUB_OFFLINE): nothing is downloaded")
    with file_lock(checkpoint.with_name(checkpoint.name + ".lock")):
        if do_convert and checkpoint.is_file():  # another process fetched it while we waited
            return checkpoint
        errors = []
        for source in record.sources:
            try:
                downloaded = fetch_source(record, source)
            except DownloadError as e:
                errors.append(e)
                if len(record.sources) > 1:   # (one source: the error raised below says it)
                    logger.log(logging.INFO if isinstance(e, SourceUnreachableError) else logging.WARNING, "%s", e)
                continue
            if not do_convert:
                return downloaded
            _install(record, source, downloaded, convert)
            return checkpoint
    if all(isinstance(e, SourceUnreachableError) for e in errors):   # offline in all but name: say it as offline
        raise record.missing_checkpoint_error(
            reason=f"{' / '.join(e.reason for e in errors)}: nothing was downloaded") from None
    if len(errors) == 1:
        raise errors[0]
    raise DownloadError(f"no source of {record.name!r} could be downloaded: {' | '.join(map(str, errors))}")


"""Reading one webdataset tar shard with bounded memory and time, whatever its bytes hold.

A shard is plain or compressed (gzip, bzip2, xz: told by its first bytes, not by its name). Members are listed
from their headers alone: a member's payload is never read to count or to skip it (an uncompressed shard is
seeked over; a compressed one is decompressed through, in small blocks, without keeping it). No single read —
a member's payload, a pax or GNU long-name header — may exceed ``max_member_bytes``: such a member ends the
reading of its shard with a :class:`~mindram.errors.DataError` before anything of it is held in memory (a
3 MB ``.tar.gz`` holding a 3 GB member costs a few bytes, not 3 GB).

Every defect of a shard — not a tar, a bad header checksum, truncated data or headers, a missing
end-of-archive marker, a corrupt compressed stream, an oversized member — is a ``DataError`` naming the shard
and where it stopped. The samples before it were already yielded; the caller decides what to do with the
rest (training skips it, logs it and counts it).
"""
import bz2
import contextlib
import gzip
import io
import lzma
import tarfile
import zlib
from pathlib import Path
from typing import Dict, Iterable, Iterator, Optional, Tuple

from ..errors import DataError

__all__ = ["MAX_MEMBER_BYTES", "iter_tar_samples", "max_tar_samples", "split_key"]

#: default bound of one member's size (and of any single read of a shard): 64 MiB
MAX_MEMBER_BYTES = 64 * 1024 * 1024
#: the largest ratio of decompressed to compressed bytes deflate can reach
GZIP_MAX_RATIO = 1032

_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"))
_OPENERS = {"gzip": gzip.GzipFile, "bzip2": bz2.BZ2File, "xz": lzma.LZMAFile}
# what a corrupt plain or compressed stream raises while tarfile reads it
_STREAM_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, UnicodeError)


def _compression(path: Path) -> Optional[str]:
    with open(path, "rb") as f:
        head = f.read(6)
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


def max_tar_samples(path: Path) -> Optional[int]:
    """The most samples shard ``path`` can hold, from its size on disk (each sample needs a 512-byte header
    block); None for bzip2/xz shards, whose decompressed size has no useful bound."""
    size = Path(path).stat().st_size
    compression = _compression(path)
    if compression is None:
        return size // tarfile.BLOCKSIZE
    return size * GZIP_MAX_RATIO // tarfile.BLOCKSIZE if compression == "gzip" else None


class _BoundedReader(io.RawIOBase):
    """A seekable binary stream refusing any single read over ``limit`` bytes (tarfile reads pax and long-name
    headers whole, so this bounds them as well as members)."""

    def __init__(self, raw, limit: int, where: str):
        super().__init__()
        self.raw, self.limit, self.where = raw, limit, where

    def readable(self):
        return True

    def seekable(self):
        return True

    def read(self, size=-1):
        if size is None or size < 0 or size > self.limit:
            raise DataError(f"{self.where}: a member or header of {size} bytes at byte {self.raw.tell()}, over "
                            f"max_member_bytes={self.limit} (raise it for shards you trust)")
        return self.raw.read(size)

    def seek(self, offset, whence=io.SEEK_SET):
        return self.raw.seek(offset, whence)

    def tell(self):
        return self.raw.tell()


def split_key(name: str) -> Tuple[str, str]:
    """``dir/000123.jpg`` → ``("dir/000123", "jpg")`` (webdataset: the extension starts at the basename's first
    dot)."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext.lower() if dot else "")


def _open(path: Path, limit: int, stack: contextlib.ExitStack) -> Tuple[tarfile.TarFile, _BoundedReader]:
    """The shard as a tarfile over a bounded (decompressed) stream; everything opened is closed by ``stack``."""
    compression = _compression(path)
    raw = stack.enter_context(open(path, "rb"))
    if compression is not None:
        raw = stack.enter_context(_OPENERS[compression](fileobj=raw, mode="rb"))
    stream = _BoundedReader(raw, limit, str(path))
    try:
        return stack.enter_context(tarfile.TarFile(fileobj=stream, mode="r")), stream
    except _STREAM_ERRORS as e:
        raise DataError(f"{path}: not a readable tar shard ({type(e).__name__}: {e})") from e


def _headers(path: Path, limit: int) -> Iterator[Tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """``(tar, header)`` of each regular member, in order; DataError at the first defect (module docstring).
    A header's own payload is left unread: the caller reads it (or checks its size) before the next."""
    with contextlib.ExitStack() as stack:
        tar, stream = _open(path, limit, stack)
        try:
            while True:
                info = tar.next()
                tar.members.clear()          # tarfile keeps every header; one at a time is all this needs
                if info is None:
                    break
                if info.isfile():
                    yield tar, info          # the caller refuses one over the bound before asking for the next
            # tarfile ends quietly at a corrupt or missing header past the first: tell them from the end marker
            stream.seek(tar.offset)
            block = stream.read(tarfile.BLOCKSIZE)
        except _STREAM_ERRORS as e:
            raise DataError(f"{path}: corrupt or truncated tar data near byte {tar.offset} "
                            f"({type(e).__name__}: {e})") from e
        if block != tarfile.NUL * tarfile.BLOCKSIZE:
            what = "no end-of-archive marker (truncated)" if len(block) < tarfile.BLOCKSIZE \
                else "an invalid header (bad checksum or garbage)"
            raise DataError(f"{path}: {what} at byte {tar.offset}")


def _payload(tar: tarfile.TarFile, info: tarfile.TarInfo, path: Path) -> bytes:
    try:
        handle = tar.extractfile(info)
        return handle.read() if handle is not None else b""
    except _STREAM_ERRORS as e:
        raise DataError(f"{path}: member {info.name!r}: corrupt or truncated data ({type(e).__name__}: {e})") from e


def iter_tar_samples(path: Path, extensions: Optional[Iterable[str]] = None,
                     max_member_bytes: int = MAX_MEMBER_BYTES,
                     skip: int = 0) -> Iterator[Tuple[str, Dict[str, bytes]]]:
    """``(key, {extension: bytes})`` of each sample of shard ``path`` after the first ``skip`` (those are
    passed over by their headers). Only members of ``extensions`` (all when None; none when empty: counting)
    are read; the others are listed with empty bytes. A sample is yielded once the next one begins or the
    shard ends cleanly: the one a defect interrupts is never yielded."""
    path, wanted = Path(path), None if extensions is None else set(extensions)
    key, members, position = None, {}, 0
    for tar, info in _headers(path, max_member_bytes):
        name_key, ext = split_key(info.name)
        if name_key != key and key is not None:
            if position >= skip:
                yield key, members
            members, position = {}, position + 1
        key = name_key
        if info.size > max_member_bytes:   # refused before tarfile passes over it (a bomb is never inflated)
            raise DataError(f"{path}: member {info.name!r} of {info.size} bytes is over "
                            f"max_member_bytes={max_member_bytes} (raise it for shards you trust)")
        if position >= skip:
            members[ext] = _payload(tar, info, path) if wanted is None or ext in wanted else b""
    if key is not None and position >= skip:
        yield key, members

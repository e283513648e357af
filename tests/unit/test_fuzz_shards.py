"""Hostile webdataset shards and laion part files: member bombs are refused before they are read, counting reads
headers only, corrupt shards are skipped, logged and counted in training, sizes.json is checked against the
shards, and a seeded fuzz run of a few hundred mutations gives only typed errors or correct samples, in bounded
time and memory."""
import gzip
import io
import json
import logging
import tarfile
import time
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from mindram.data import LaionFileList, WebDataset
from mindram.data.webdataset import _ShardStream, read_samples
from mindram.errors import DataError
from tests.unit.test_laion_filelist import line

SAMPLES = 6
CAPTIONS = [f"caption {i}" for i in range(SAMPLES)]
MiB = 1024 * 1024


def png(i):
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shard(path, samples=SAMPLES, mode="w", extra=None):
    """A shard of ``samples`` (8 x 8 PNG + caption) samples; ``extra(tar, i)`` may add members after sample i."""
    with tarfile.open(path, mode, **({"compresslevel": 1} if mode == "w:gz" else {})) as tar:
        for i in range(samples):
            add(tar, f"{i:06d}.png", png(i))
            add(tar, f"{i:06d}.txt", CAPTIONS[i].encode())
            if extra is not None:
                extra(tar, i)
    return path


class Zeros(io.RawIOBase):
    """``size`` zero bytes, produced on demand (a bomb's payload without holding it)."""

    def __init__(self, size):
        super().__init__()
        self.left = size

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def epoch(source, samples=None, epochs=1):
    """Captions of one epoch of the whole stream (no pipeline: the generator itself); a list per epoch when
    ``epochs`` > 1."""
    stream = _ShardStream(source, list(range(len(source.shards))), samples or sum(source.sizes), False, 0, 0, 0)
    out = [[str(caption) for _, caption, _ in stream] for _ in range(epochs)]
    return out[0] if epochs == 1 else out


def test_counting_reads_member_names_only(tmp_path):
    """A shard without sizes.json is counted from its headers: a 40 MiB member is passed over, not read."""
    big = 40 * MiB

    def extra(tar, i):
        if i == 1:
            info = tarfile.TarInfo(f"{i:06d}.npy")    # a member the source does not use
            info.size = big
            tar.addfile(info, Zeros(big))
    write_shard(tmp_path / "a.tar.gz", mode="w:gz", extra=extra)
    tracemalloc.start()
    source = WebDataset(str(tmp_path / "a.tar.gz"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert source.sizes == [SAMPLES]
    assert peak < 4 * MiB, f"counting held {peak / MiB:.1f} MiB"
    tracemalloc.start()
    assert epoch(source) == CAPTIONS          # training skips the unused member without reading it either
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * MiB, f"streaming held {peak / MiB:.1f} MiB"


def test_member_bomb_ends_its_shard_before_it_is_read(tmp_path, caplog):
    """A 3 MB .tar.gz with a 3 GB member: over max_member_bytes, so the shard stops there, at once."""
    def extra(tar, i):
        if i == 2:
            info = tarfile.TarInfo("000003.png")
            info.size = 3 * 1024 * MiB
            tar.fileobj.write(info.tobuf())      # the header alone, then 3 MiB of its zeros: the shard is cut
            tar.fileobj.write(bytes(3 * MiB))
            raise StopIteration
    path = tmp_path / "bomb.tar.gz"
    try:
        write_shard(path, mode="w:gz", extra=extra)
    except StopIteration:
        pass
    start = time.monotonic()
    tracemalloc.start()
    with caplog.at_level(logging.WARNING):
        source = WebDataset(str(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.monotonic() - start < 2 and peak < 4 * MiB
    assert source.sizes == [3]                 # the samples before the bomb
    assert "max_member_bytes=67108864" in caplog.text and "000003.png" in caplog.text
    assert epoch(source, samples=6) == CAPTIONS[:3] * 2   # the stream meets the bomb and wraps around
    assert list(source.stats.bad_items) == [-1]
    # the bound is configurable: a smaller one stops at the first member over it
    with pytest.raises(DataError, match="max_member_bytes=100"):
        list(read_samples(write_shard(tmp_path / "small.tar"), max_member_bytes=100))


SAMPLE_BYTES = 2048   # each sample: two members of one 512-byte header and one 512-byte data block


def cut(data, at):
    return data[:at]


def flip_header_checksum(data, sample):
    data = bytearray(data)
    data[sample * SAMPLE_BYTES + 150] ^= 0x11     # a digit of the checksum field of the sample's image header
    return bytes(data)


@pytest.mark.parametrize("defect", ["truncated_tar", "bad_checksum", "truncated_gzip", "not_a_tar"])
def test_a_corrupt_shard_is_skipped_logged_and_counted_in_training(tmp_path, caplog, defect):
    good = write_shard(tmp_path / "00000.tar")
    raw = write_shard(tmp_path / "raw.tar").read_bytes()
    name = "00001.tar.gz" if defect == "truncated_gzip" else "00001.tar"
    bad = tmp_path / name
    if defect == "truncated_tar":
        bad.write_bytes(cut(raw, 3 * SAMPLE_BYTES + 700))   # inside sample 3's image
    elif defect == "bad_checksum":
        bad.write_bytes(flip_header_checksum(raw, 4))       # sample 4's image header
    elif defect == "truncated_gzip":
        bad.write_bytes(cut(gzip.compress(raw), len(gzip.compress(raw)) // 2))
    else:
        bad.write_bytes(b"this is no tar file at all" * 500)   # large enough to hold the claimed 6
    sizes = {"00000.tar": SAMPLES, name: SAMPLES}
    (tmp_path / "sizes.json").write_text(json.dumps(sizes))
    source = WebDataset([str(good), str(bad)])
    with caplog.at_level(logging.WARNING):
        first, second = epoch(source, epochs=2)
    assert len(first) == 2 * SAMPLES and len(second) == 2 * SAMPLES     # the epochs keep their length
    assert all(c in CAPTIONS for c in first)
    assert list(source.stats.bad_items) == [-2]                         # counted once, over both epochs
    assert str(bad) in source.stats.bad_items[-2]
    assert "webdataset epoch 1: 0 unreadable sample(s) and 1 corrupt shard part(s) skipped" in caplog.text


def test_counting_a_corrupt_shard_counts_the_samples_before_the_defect(tmp_path, caplog):
    raw = write_shard(tmp_path / "raw.tar").read_bytes()
    assert raw[SAMPLE_BYTES:SAMPLE_BYTES + 10] == b"000001.png"
    (tmp_path / "00000.tar").write_bytes(cut(raw, 3 * SAMPLE_BYTES + 700))
    with caplog.at_level(logging.WARNING):
        source = WebDataset(str(tmp_path / "00000.tar"))
    assert source.sizes == [3] and "counting 3 sample(s) before it" in caplog.text
    assert epoch(source) == CAPTIONS[:3]


def test_sizes_json_is_checked(tmp_path):
    write_shard(tmp_path / "00000.tar")
    urls = str(tmp_path / "00000.tar")
    bad_tables = {"[6]": "a JSON list, expected a mapping", '{"00000.tar": 1000000000000}': "can hold at most",
                  '{"00000.tar": "6"}': "not a sample count", '{"00000.tar": -1}': "not a sample count",
                  '{"00000.tar": 6.0}': "not a sample count", "{not json": "not a JSON mapping"}
    for text, message in bad_tables.items():
        (tmp_path / "sizes.json").write_text(text)
        with pytest.raises(DataError, match=message) as raised:
            WebDataset(urls)
        assert "\n" not in str(raised.value) and "sizes.json" in str(raised.value)
    # a count within the file's bound but not what the shard holds: found when the shard is read to its end
    (tmp_path / "sizes.json").write_text('{"00000.tar": 7}')
    source = WebDataset(urls)
    with pytest.raises(DataError, match=r"'00000.tar' claims 7 samples, the shard holds 6"):
        epoch(source)


def test_laion_parts_corrupt_or_with_an_oversized_line_are_skipped(tmp_path):
    images = [np.full((8, 8, 3), 30 * i, np.uint8) for i in range(4)]
    lines = [line(images[i], {"caption_en": CAPTIONS[i]}) for i in range(4)]
    (tmp_path / "part-00000").write_bytes(b"".join(lines))
    (tmp_path / "part-00001.gz").write_bytes(gzip.compress(b"".join(lines))[:-30])   # truncated gzip
    (tmp_path / "laion.filelist").write_text("part-00000\npart-00001.gz\n")
    (tmp_path / "sizes.json").write_text(json.dumps({"part-00000": 4, "part-00001.gz": 4}))
    source = LaionFileList(tmp_path / "laion.filelist")
    assert len(epoch(source)) == 8 and list(source.stats.bad_items) == [-2]
    # a line over the bound ends its part before it is held whole
    (tmp_path / "part-00000").write_bytes(lines[0] + b"x" * 5000 + b"\n" + lines[1])
    (tmp_path / "sizes.json").unlink()
    (tmp_path / "laion.filelist").write_text("part-00000\n")
    source = LaionFileList(tmp_path / "laion.filelist", max_member_bytes=4096)
    assert source.sizes == [1] and epoch(source, samples=2) == CAPTIONS[:1] * 2
    assert "line 2 is over max_member_bytes=4096" in source.stats.bad_items[-1]


# --- fuzzing ---------------------------------------------------------------------------------------------------

def mutate(data, rng):
    """One random mutation of ``data``: byte flips, a cut, inserted or deleted bytes, or a header's size field;
    returns the mutant and the offset of its first changed byte."""
    data = bytearray(data)
    kind = rng.integers(5)
    at = int(rng.integers(len(data)))
    if kind == 0:
        spots = [int(rng.integers(len(data))) for _ in range(int(rng.integers(1, 8)))]
        for spot in spots:
            data[spot] ^= int(rng.integers(1, 256))
        at = min(spots)
    elif kind == 1:
        del data[at:]
    elif kind == 2:
        data[at:at] = rng.integers(0, 256, int(rng.integers(1, 600))).astype(np.uint8).tobytes()
    elif kind == 3:
        del data[at:at + int(rng.integers(1, 1200))]
    else:   # a member's size field (octal, at byte 124 of its header block): huge, or garbage
        at = 1024 * int(rng.integers(max(1, len(data) // 1024))) + 124   # every member: header + one block
        field = [b"77777777777\0", b"\x80" + bytes(3) + b"\xff" * 8, b"garbage!!!!\0"][int(rng.integers(3))]
        data[at:at + 12] = field
    return bytes(data[:len(data)]), at


def sample_ends(raw):
    """Byte offset at which a reader has seen sample i complete: the end of the next sample's first header (or
    of the end marker), from the valid shard's own layout."""
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        starts = [m.offset for m in tar.getmembers() if m.name.endswith(".png")]
    end_marker = len(raw.rstrip(b"\0")) + 1024
    return [(starts[i + 1] + 512) if i + 1 < len(starts) else end_marker for i in range(len(starts))]


def check_mutant(path, ends, at):
    """Typed errors only; every sample a plain mutant (``ends``: :func:`sample_ends` of the valid shard) leaves
    untouched is read exactly."""
    try:
        source = WebDataset(str(path))
        assert source.sizes[0] <= SAMPLES * 2 + 40
        captions = epoch(source, samples=source.sizes[0])
    except DataError:   # refused when opened, or not one readable sample in it
        return "refused"
    assert len(captions) == source.sizes[0] and all(isinstance(c, str) for c in captions)
    if ends is not None:
        untouched = sum(1 for end in ends if end <= at)
        samples = []
        try:
            for key, members in read_samples(path):
                samples.append((key, members))
        except DataError:
            pass
        assert [k for k, _ in samples[:untouched]] == [f"{i:06d}" for i in range(untouched)]
        assert [m.get("txt") for _, m in samples[:untouched]] == [c.encode() for c in CAPTIONS[:untouched]]
    return "read"


@pytest.mark.parametrize("compressed", [False, True])
def test_fuzzed_shards_give_typed_errors_or_correct_samples(tmp_path, compressed):
    raw = write_shard(tmp_path / "valid.tar").read_bytes()
    valid = gzip.compress(raw, mtime=0) if compressed else raw
    rng = np.random.default_rng(1234 + compressed)
    path = tmp_path / ("mutant.tar.gz" if compressed else "mutant.tar")
    ends = None if compressed else sample_ends(raw)
    outcomes, slowest = {"refused": 0, "read": 0}, 0.0
    start = time.monotonic()
    tracemalloc.start()
    for _ in range(250):
        data, at = mutate(valid, rng)
        path.write_bytes(data)
        t0 = time.monotonic()
        outcomes[check_mutant(path, ends, at)] += 1
        slowest = max(slowest, time.monotonic() - t0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    elapsed = time.monotonic() - start
    print(f"{outcomes}, {elapsed:.1f} s, slowest {slowest * 1e3:.0f} ms, peak {peak / MiB:.1f} MiB")
    assert outcomes["refused"] and outcomes["read"]
    assert elapsed < 30 and slowest < 3 and peak < 16 * MiB   # generous: the CI machine is shared and traced


def test_fuzzed_laion_parts_give_typed_errors_or_correct_lines(tmp_path):
    images = [np.full((8, 8, 3), 30 * i, np.uint8) for i in range(4)]
    valid = gzip.compress(b"".join(line(images[i], {"caption_en": CAPTIONS[i]}) for i in range(4)), mtime=0)
    (tmp_path / "laion.filelist").write_text("part-00000.gz\n")
    rng = np.random.default_rng(99)
    start = time.monotonic()
    for _ in range(200):
        data, _ = mutate(valid, rng)
        (tmp_path / "part-00000.gz").write_bytes(data)
        try:
            source = LaionFileList(tmp_path / "laion.filelist")
            captions = epoch(source)
        except DataError:   # refused when opened, or not one readable line in it
            continue
        assert len(captions) == sum(source.sizes) and all(isinstance(c, str) for c in captions)
    assert time.monotonic() - start < 15


def test_a_sample_over_the_pixel_budget_is_skipped_before_it_is_decoded(tmp_path):
    """A PNG whose header claims 10,000 x 10,000 pixels (100 megapixels, 300 MB decoded) in a few hundred bytes:
    refused by the pixel budget from its header, before any decoding, then skipped and counted like an unreadable
    sample."""
    import struct
    import zlib
    data = bytearray(png(0))
    data[16:24] = struct.pack(">II", 10_000, 10_000)               # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # the IHDR chunk's CRC
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        for i in range(SAMPLES):
            add(tar, f"{i:06d}.png", bytes(data) if i == 2 else png(i))
            add(tar, f"{i:06d}.txt", CAPTIONS[i].encode())
    source = WebDataset([str(tmp_path / "00000.tar")])
    tracemalloc.start()
    try:
        captions = epoch(source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(captions) == SAMPLES and "caption 2" not in captions   # the epoch keeps its length
    assert list(source.stats.bad_items) == [2] and "megapixels" in source.stats.bad_items[2], source.stats.bad_items
    assert peak < 20 * MiB

"""Seeded fuzzing of what a download server sends (mindram.hub.download): a loopback socket server answers each
request with a mutation of a valid response (status line, Content-Length / Content-Range / X-Linked-Size /
X-Linked-Etag values, header syntax, a body cut short or running long). With the published sha256 (as the
catalog records it), the download either gives exactly those bytes or fails with a DownloadError (a
CheckpointError); no other exception, no partial file put in place, bounded time."""
import hashlib
import socket
import threading
import time

import numpy as np
import pytest

from mindram import hub
from mindram.errors import MindramError

SEED = 5
MUTATIONS = 150
BODY = bytes(range(256)) * 16   # 4 KiB
SHA = hashlib.sha256(BODY).hexdigest()
SLOWEST_S = 8.0
VALUES = [b"", b"0", b"-1", b"abc", b"4096", b"4095", b"4097", b"99999999999999999999", b"1e3", b" 12", b"\xff\xfe",
          b"bytes 0-4095/4096", b"bytes 5-4095/4096", b"bytes */4096", b"bytes 0-1/x", b'"' + SHA.encode() + b'"',
          b'"' + b"0" * 64 + b'"', b"W/" + SHA.encode()]
STATUSES = [b"HTTP/1.1 200 OK", b"HTTP/1.1 206 Partial Content", b"HTTP/1.1 302 Found", b"HTTP/1.1 416 Range",
            b"HTTP/1.1 500 Oops", b"HTTP/1.1 404 Not Found", b"HTTP/1.0 200 OK", b"HTTP/1.1 999 What",
            b"HTTP/1.1 abc", b"SPDY 200", b"", b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70000]


def valid_response():
    return [b"HTTP/1.1 200 OK", b"Content-Length: 4096", b"X-Linked-Etag: \"" + SHA.encode() + b"\"",
            b"X-Linked-Size: 4096", b"Connection: close"], BODY


def mutate(rng):
    head, body = valid_response()
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(7))
        if kind == 0:
            head[0] = STATUSES[int(rng.integers(len(STATUSES)))]
        elif kind == 1:     # a header's value
            i = int(rng.integers(1, len(head)))
            head[i] = head[i].split(b":")[0] + b": " + VALUES[int(rng.integers(len(VALUES)))]
        elif kind == 2:     # an extra header (Content-Range, a second Content-Length, garbage)
            name = [b"Content-Range", b"Content-Length", b"X-Linked-Size", b"Transfer-Encoding", b"Location",
                    b"\x00bad"][int(rng.integers(6))]
            head.insert(int(rng.integers(1, len(head) + 1)), name + b": " + VALUES[int(rng.integers(len(VALUES)))])
        elif kind == 3:     # the body cut short
            body = body[:int(rng.integers(len(body)))]
        elif kind == 4:     # the body running long
            body = body + bytes(int(rng.integers(1, 5000)))
        elif kind == 5:     # a byte of the body changed
            i = int(rng.integers(len(body))) if body else 0
            body = body[:i] + bytes([(body[i] + 1) % 256]) + body[i + 1:] if body else body
        else:               # a header line without its colon
            i = int(rng.integers(1, len(head)))
            head[i] = head[i].replace(b":", b"")
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class RawServer:
    """Answers every connection on 127.0.0.1 with ``self.response`` (raw bytes), then closes it."""

    def __init__(self):
        self.response = b""
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    conn.recv(65536)
                    conn.sendall(self.response)
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("MINDRAM_DOWNLOAD_TIMEOUT", "0.5")
    monkeypatch.setenv("MINDRAM_DOWNLOAD_RETRIES", "1")
    monkeypatch.setattr(hub, "RETRY_BACKOFF_S", 0.01)
    raw = RawServer()
    yield raw
    raw.close()


def test_fuzzed_server_responses_give_the_bytes_or_a_download_error(server, tmp_path):
    rng = np.random.default_rng(SEED)
    url = f"http://127.0.0.1:{server.port}/org/repo/resolve/main/weights.safetensors"
    outcomes = {"ok": 0, "refused": 0}
    server.response = b"\r\n".join(valid_response()[0]) + b"\r\n\r\n" + BODY
    assert hub.download(url, tmp_path / "valid.bin", sha256=SHA, size=len(BODY)) == SHA
    for i in range(MUTATIONS):
        server.response = mutate(rng)
        target = tmp_path / f"{i}.bin"
        start = time.perf_counter()
        try:
            hub.download(url, target, sha256=SHA, size=len(BODY) if i % 2 else None)
        except MindramError as e:
            assert "\n" not in str(e), str(e)
            assert not target.exists()
            outcomes["refused"] += 1
        else:
            assert target.read_bytes() == BODY, server.response[:300]
            outcomes["ok"] += 1
        assert time.perf_counter() - start < SLOWEST_S, server.response[:300]
    assert outcomes["ok"] and outcomes["refused"], outcomes

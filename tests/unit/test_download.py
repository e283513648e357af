"""Pretrained weights on demand (mindram.hub): a loopback server in the hub's URL layout serves a tiny
open_clip state dict; first use downloads, verifies, converts and caches it, and nothing else happens twice."""
import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from safetensors.numpy import save

import mindram
from mindram import catalog, hub
from mindram.errors import CheckpointError, DownloadError
from mindram.models.clip.convert import to_open_clip_state_dict
from tests.conftest import ROOT
from tests.unit.test_clip_model import inputs, tiny

REPO, FILE, NAME = "test-org/tiny-clip", "open_clip_model.safetensors", "clip_tiny_test"
URL_PATH = f"/{REPO}/resolve/main/{FILE}"


class Server:
    """ThreadingHTTPServer on 127.0.0.1: ``files`` by URL path, Range support, X-Linked-Etag (the sha256 of
    ``etag`` or of the file); records every request's path and Range header."""

    def __init__(self):
        self.files, self.etags, self.requests = {}, {}, []
        self.drop_after = None   # first request: send this many bytes, then close the connection
        self.delay = 0.0
        self.fail_status = None  # f(request number from 1) -> an HTTP error status to answer instead, or None
        self.pieces = None       # (bytes, seconds): the body in pieces of this size this long apart (at most 400)
        self.unsized = False     # no Content-Length: the body ends when the connection closes
        self.sent = 0            # body bytes written to the client
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                time.sleep(server.delay)
                data = server.files.get(self.path)
                if data is None or (server.fail_status and server.fail_status(len(server.requests))):
                    self.send_error(404 if data is None else server.fail_status(len(server.requests)))
                    return
                start, status = 0, 200
                if self.headers.get("Range"):
                    start, status = int(self.headers["Range"].split("=")[1].split("-")[0]), 206
                self.send_response(status)
                if not server.unsized:
                    self.send_header("Content-Length", str(len(data) - start))
                self.send_header("X-Linked-Etag", f'"{server.etags.get(self.path, hashlib.sha256(data).hexdigest())}"')
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                body = data[start:]
                if server.drop_after is not None and len(server.requests) == 1:
                    body = body[:server.drop_after]
                    self.close_connection = True
                size, pause = server.pieces or (len(body), 0.0)
                for offset in range(0, min(len(body), 400 * size), max(size, 1)):
                    try:
                        self.wfile.write(body[offset:offset + size])
                        self.wfile.flush()
                    except OSError:   # the client went away
                        return
                    server.sent += len(body[offset:offset + size])
                    time.sleep(pause)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(name="setup")
def fixture_setup(tmp_path, monkeypatch):
    """A catalog folder with a tiny CLIP architecture and a record whose source is on the loopback server,
    $MINDRAM_HOME in tmp_path, online; yields (server, reference model, weights bytes)."""
    config = tiny(mindram.CLIPConfig.from_pretrained("clip_vit_b_32.laion2b_s34b_b79k"))
    config = config.replace(checkpoint_name_or_path=None)
    model = mindram.CLIPModel(config)
    weights = save(to_open_clip_state_dict(model.state_dict()))
    root = tmp_path / "catalog"
    (root / "clip" / "model").mkdir(parents=True)
    config.save(root / "clip" / "model" / f"{NAME}.yaml")
    (root / "clip" / "pretrained.yaml").write_text(
        f"{NAME}:\n  default_tag: hub\n  tags:\n    hub: {{arch: {NAME}, source: \"{FILE} of {REPO}\", "
        f"sources: [{{repo: {REPO}, filename: {FILE}, convert: clip}}]}}\n", encoding="utf-8")
    monkeypatch.setenv("MINDRAM_CATALOG", str(root))
    monkeypatch.setenv("MINDRAM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MINDRAM_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "RETRY_BACKOFF_S", 0.05)
    with Server() as server:
        server.files[URL_PATH] = weights
        monkeypatch.setenv("MINDRAM_ENDPOINT", server.endpoint)
        yield server, model, weights


def leftovers(home):
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def test_first_use_downloads_verifies_converts_and_caches(setup):
    server, model, _ = setup
    assert catalog.support_list("clip", with_status=True)[NAME] is False
    loaded = mindram.CLIPModel.from_pretrained(NAME)
    pixels, ids = inputs(model.config)
    np.testing.assert_allclose(loaded.get_image_features(pixels).asnumpy(),
                               model.get_image_features(pixels).asnumpy(), atol=1e-6)
    assert server.requests == [(URL_PATH, None)]
    home = catalog.resolve("clip", NAME).checkpoint_path.parent.parent
    # the converted checkpoint and its config; the downloaded original is removed
    assert leftovers(home) == [f"clip/{NAME}.ckpt", f"clip/{NAME}.yaml"]
    assert mindram.CLIPModel.show_support_list(with_status=True)[NAME] is True
    # second use: no request at all
    mindram.CLIPModel.from_pretrained(NAME)
    mindram.CLIPModel.from_pretrained(f"{NAME}.hub")
    assert len(server.requests) == 1


def test_corrupted_byte_fails_sha256_and_leaves_nothing(setup):
    server, _, weights = setup
    corrupt = bytearray(weights)
    corrupt[len(corrupt) // 2] ^= 0xFF
    server.files[URL_PATH] = bytes(corrupt)
    server.etags[URL_PATH] = good = hashlib.sha256(weights).hexdigest()
    with pytest.raises(DownloadError) as info:
        mindram.CLIPModel.from_pretrained(NAME)
    message = str(info.value)
    assert good in message and hashlib.sha256(corrupt).hexdigest() in message and "\n" not in message
    home = catalog.resolve("clip", NAME).checkpoint_path.parent.parent
    assert leftovers(home) == []


def test_download_dropped_half_way_resumes_with_range(setup):
    server, model, weights = setup
    half = len(weights) // 2
    server.drop_after = half
    record = catalog.resolve("clip", NAME)
    path = hub.ensure_checkpoint(record, convert=None, do_convert=False)  # the verified original
    assert path.read_bytes() == weights
    assert server.requests == [(URL_PATH, None), (URL_PATH, f"bytes={half}-")]
    assert not path.with_name(path.name + ".part").exists()
    # converting later reuses the download: no further request
    loaded = mindram.CLIPModel.from_pretrained(NAME)
    assert len(server.requests) == 2 and not path.exists()
    pixels, _ = inputs(model.config)
    np.testing.assert_allclose(loaded.get_image_features(pixels).asnumpy(),
                               model.get_image_features(pixels).asnumpy(), atol=1e-6)


def test_offline_names_file_and_command_and_makes_no_request(setup, monkeypatch):
    server, _, _ = setup
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError) as info:
        mindram.CLIPModel.from_pretrained(NAME)
    message = str(info.value)
    record = catalog.resolve("clip", NAME)
    for fragment in (str(record.checkpoint_path), "convert_weights/convert_clip.py", f"--model_name {NAME}",
                     f"{server.endpoint}{URL_PATH}", "Offline"):
        assert fragment in message, message
    assert server.requests == []


def test_cli_no_convert_and_errors(setup, capsys):
    server, _, weights = setup
    from mindram import download
    assert download.main([NAME, "--no-convert"]) == 0
    path = capsys.readouterr().out.strip()
    assert path.endswith(f"downloads/{NAME}--{FILE}") and open(path, "rb").read() == weights
    assert download.main(["clip_tiny_tset"]) == 2
    assert "closest: ['clip_tiny_test'" in capsys.readouterr().err
    server.files.clear()
    assert download.main([f"{NAME}.hub"]) == 0   # the kept download is converted, nothing requested again
    assert len(server.requests) == 1


def test_two_processes_racing_download_once(setup):
    server, _, _ = setup
    server.delay = 1.0  # the first download holds the lock while the second process waits for it
    env = dict(os.environ, GLOG_v="3")
    procs = [subprocess.Popen([sys.executable, "-m", "mindram.download", NAME, "--verbose"], cwd=str(ROOT), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err
        assert out.strip() == str(catalog.resolve("clip", NAME).checkpoint_path)
    assert len(server.requests) == 1
    # normally the second process waited on the lock and then found the converted file (timing-dependent)
    waited = sum("waiting for another process" in err for _, err in outs)
    print(f"processes that waited for the lock: {waited}")


def test_training_from_a_name_fetches_its_weights_unless_offline(setup, monkeypatch, caplog):
    """Trainer(model=<name>) fine-tunes the published weights (downloaded on first use) like MindFormers;
    offline, with nothing converted, it says so and starts from random initialisation."""
    from mindram.trainer import Trainer
    trainer = Trainer(task="contrastive_language_image_pretrain", model=NAME)
    assert trainer.config.load_checkpoint == NAME and setup[0].requests == []   # fetched when the model is built
    monkeypatch.setenv("MINDRAM_OFFLINE", "1")
    trainer = Trainer(task="contrastive_language_image_pretrain", model=NAME)
    assert not trainer.config.get("load_checkpoint") and "offline" in caplog.text


def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("endpoint", ["closed_port", "unresolvable"])
def test_unreachable_host_fails_at_once_with_the_offline_message(setup, monkeypatch, endpoint):
    """No network: a name that does not resolve or a refused connection is known at once; the message is offline
    mode's (expected path, URL, convert command), without retries, a chained cause or a .part file."""
    monkeypatch.setattr(hub, "RETRY_BACKOFF_S", 1.0)   # 5 retries would take 31 s
    url_base = f"http://127.0.0.1:{closed_port()}" if endpoint == "closed_port" else "http://nonexistent.invalid"
    monkeypatch.setenv("MINDRAM_ENDPOINT", url_base)
    started = time.monotonic()
    with pytest.raises(CheckpointError) as info:
        mindram.pipeline("zero_shot_image_classification", model=NAME, candidate_labels=["a cat", "a dog"])
    assert time.monotonic() - started < 10
    message, record = str(info.value), catalog.resolve("clip", NAME)
    for fragment in (str(record.checkpoint_path), "convert_weights/convert_clip.py", f"--model_name {NAME}",
                     f"{url_base}{URL_PATH}", "cannot be reached"):
        assert fragment in message, message
    assert ".part" not in message and info.value.__cause__ is None and info.value.__suppress_context__
    monkeypatch.setenv("MINDRAM_OFFLINE", "1")
    with pytest.raises(CheckpointError) as offline:
        mindram.CLIPModel.from_pretrained(NAME)
    assert message.split("; download ")[1] == str(offline.value).split("; download ")[1]   # the same instructions
    assert leftovers(record.checkpoint_path.parent.parent) == []


def test_cli_unreachable_is_one_line(setup, monkeypatch, capsys):
    monkeypatch.setattr(hub, "RETRY_BACKOFF_S", 1.0)
    monkeypatch.setenv("MINDRAM_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    from mindram import download
    started = time.monotonic()
    assert download.main([NAME]) == 2
    err = capsys.readouterr().err
    assert time.monotonic() - started < 10 and len(err.strip().splitlines()) == 1, err
    assert "connection refused" in err and f"--model_name {NAME}" in err


def test_transient_errors_are_retried_and_a_partial_file_is_named_only_when_there_is_one(setup, monkeypatch):
    server, _, weights = setup
    record = catalog.resolve("clip", NAME)
    part = hub.download_path(record, record.sources[0])
    part = part.with_name(part.name + ".part")
    server.fail_status = lambda number: 503 if number == 1 else None   # one 503, then the file
    assert hub.ensure_checkpoint(record, do_convert=False).read_bytes() == weights
    assert len(server.requests) == 2
    hub.download_path(record, record.sources[0]).unlink()
    monkeypatch.setenv("MINDRAM_DOWNLOAD_RETRIES", "1")
    server.requests.clear()
    server.fail_status = lambda number: 503   # nothing ever arrives
    with pytest.raises(DownloadError, match="after 2 attempts: HTTP Error 503") as info:
        hub.ensure_checkpoint(record, do_convert=False)
    assert ".part" not in str(info.value) and not part.exists() and len(server.requests) == 2
    server.requests.clear()
    server.drop_after = half = len(weights) // 2   # half arrives, then 503s
    server.fail_status = lambda number: 503 if number > 1 else None
    with pytest.raises(DownloadError) as info:
        hub.ensure_checkpoint(record, do_convert=False)
    assert f"the partial file {part} ({half} bytes) is kept" in str(info.value)
    assert part.stat().st_size == half
    server.fail_status = lambda number: 404   # not retried
    server.requests.clear()
    with pytest.raises(DownloadError, match=r"HTTP 404 .*\(%d bytes\) is kept" % half):
        hub.ensure_checkpoint(record, do_convert=False)
    assert len(server.requests) == 1


def test_a_server_below_the_minimum_rate_is_cut_off_and_resumed(setup, monkeypatch, capsys):
    """2 bytes every 0.1 s never trips the per-read timeout; the minimum rate ends each attempt after its window,
    the next one resumes with Range, and the CLI fails in one line keeping what arrived."""
    server, _, _ = setup
    server.pieces = (2, 0.1)
    monkeypatch.setenv("MINDRAM_DOWNLOAD_MIN_RATE", "1000")
    monkeypatch.setenv("MINDRAM_DOWNLOAD_RATE_WINDOW", "0.5")
    monkeypatch.setenv("MINDRAM_DOWNLOAD_RETRIES", "1")
    from mindram import download
    started = time.monotonic()
    assert download.main([NAME]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert time.monotonic() - started < 10 and len(lines) == 2 and "retrying" in lines[0], lines   # one warning
    err = lines[1]
    assert err.startswith("mindram.download: error: ") and "after 2 attempts" in err and "below $MINDRAM_DOWNLOAD_MIN_RATE=1000 bytes/s" in err and ".part (" in err
    assert len(server.requests) == 2 and server.requests[1][1].startswith("bytes=")   # resumed
    monkeypatch.setenv("MINDRAM_DOWNLOAD_MIN_RATE", "fast")
    assert download.main([NAME]) == 2
    assert "$MINDRAM_DOWNLOAD_MIN_RATE='fast': expected a number >= 0" in capsys.readouterr().err


def test_a_body_longer_than_the_catalog_size_is_cut_off_when_it_passes_it(setup, tmp_path):
    server, _, weights = setup
    target = tmp_path / "dl" / FILE
    url = f"{server.endpoint}{URL_PATH}"
    with pytest.raises(DownloadError, match=f"announces {len(weights)} bytes, the catalog records 1000; nothing was "
                                            "downloaded$"):
        hub.download(url, target, size=1000)   # the announced size is refused before any byte is written
    assert len(server.requests) == 1 and list((tmp_path / "dl").iterdir()) == []
    endless = bytes(32 << 20)
    server.files[URL_PATH], server.unsized, server.pieces = endless, True, (64 << 10, 0.0)
    with pytest.raises(DownloadError, match=r"runs past the 1000 bytes the catalog records; cut off at \d+ bytes; "
                                            r"the partial file .*\.part was deleted"):
        hub.download(url, target, size=1000)
    assert list((tmp_path / "dl").iterdir()) == [] and len(server.requests) == 2   # not retried
    print(f"body bytes the server got out before the client closed: {server.sent}")
    assert server.sent < len(endless) // 2   # the client stopped reading long before the end

"""Pretrained weights on demand (mindram.hub): a loopback server in the hub's URL layout serves a tiny
open_clip state dict; first use downloads, verifies, converts and caches it, and nothing else happens twice."""
import hashlib
import http.server
import os
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
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                time.sleep(server.delay)
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start, status = 0, 200
                if self.headers.get("Range"):
                    start, status = int(self.headers["Range"].split("=")[1].split("-")[0]), 206
                self.send_response(status)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("X-Linked-Etag", f'"{server.etags.get(self.path, hashlib.sha256(data).hexdigest())}"')
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                body = data[start:]
                if server.drop_after is not None and len(server.requests) == 1:
                    body = body[:server.drop_after]
                    self.close_connection = True
                self.wfile.write(body)

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

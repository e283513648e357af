"""ClipLoss over a data-parallel global batch (open_clip's ``local_loss`` / ``gather_with_grad``) on MindSpore's
CPU collective backend: two ranks started by ``msrun`` each compute the loss and its gradients on their half of
a batch; the results must equal the single-process loss on the concatenated batch and its gradients.

The file is also the workers' script (``python test_clip_loss_gather.py OUT_DIR`` under msrun).
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow   # one msrun job (2 ranks) for the module: about a minute on 2 cores

WORLD, ROWS, DIM = 2, 4, 8
COMBOS = [(False, False), (False, True), (True, False), (True, True)]   # (local_loss, gather_with_grad)


def global_batch():
    """Normalised image/text features of the global batch (WORLD * ROWS pairs) and the logit scale."""
    rng = np.random.default_rng(0)
    image, text = rng.normal(size=(2, WORLD * ROWS, DIM)).astype(np.float32)
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    text = 0.6 * image + 0.4 * text / np.linalg.norm(text, axis=1, keepdims=True)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    return image, text, np.array([14.0], np.float32)


def loss_and_grads(loss_cell, image, text, scale):
    """(loss, d/d image, d/d text, d/d scale) of ``loss_cell(image, text, scale)`` in graph mode; the caller's
    execution mode is restored afterwards (the single-process side runs in the pytest worker)."""
    import mindspore as ms

    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        args = [ms.Tensor(a) for a in (image, text, scale)]
        loss, grads = ms.value_and_grad(loss_cell, grad_position=(0, 1, 2))(*args)
        return [loss.asnumpy()] + [g.asnumpy() for g in grads]
    finally:
        ms.set_context(mode=previous)


def worker(out_dir):
    """One rank under msrun: results of every (local_loss, gather_with_grad) on this rank's rows."""
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    from mindram.losses import ClipLoss

    ms.set_context(device_target="CPU")
    init()
    rank, world = get_rank(), get_group_size()
    image, text, scale = global_batch()
    rows = slice(rank * ROWS, (rank + 1) * ROWS)
    results = {}
    for local_loss, with_grad in COMBOS:
        cell = ClipLoss(local_loss=local_loss, gather_with_grad=with_grad, rank=rank, world_size=world)
        for name, value in zip(("loss", "image", "text", "scale"),
                               loss_and_grads(cell, image[rows], text[rows], scale)):
            results[f"{int(local_loss)}{int(with_grad)}_{name}"] = value
    np.savez(Path(out_dir) / f"rank{rank}.npz", **results)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """The two ranks' results (one msrun job for every case)."""
    out = tmp_path_factory.mktemp("gather")
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", GLOG_v="3")
    command = ["msrun", f"--worker_num={WORLD}", f"--local_worker_num={WORLD}", f"--master_port={free_port()}",
               f"--log_dir={out / 'logs'}", "--join=True", __file__, str(out)]
    done = subprocess.run(command, env=env, cwd=str(out), capture_output=True, text=True, timeout=240)
    logs = "".join(p.read_text(errors="replace")[-2000:] for p in sorted((out / "logs").glob("*.log")))
    assert done.returncode == 0, f"msrun failed ({done.returncode}): {done.stderr[-2000:]}\n{logs}"
    return [dict(np.load(out / f"rank{r}.npz")) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single():
    """Single-process loss and gradients on the concatenated batch."""
    from mindram.losses import ClipLoss

    return dict(zip(("loss", "image", "text", "scale"), loss_and_grads(ClipLoss(), *global_batch())))


@pytest.mark.parametrize("local_loss,with_grad", COMBOS)
def test_gathered_loss_equals_single_process_loss(ranks, single, local_loss, with_grad):
    key = f"{int(local_loss)}{int(with_grad)}"
    losses = [float(r[f"{key}_loss"]) for r in ranks]
    assert abs(np.mean(losses) - float(single["loss"])) <= 1e-6
    if not local_loss:   # every rank computes the loss of the whole global batch
        assert max(abs(loss - float(single["loss"])) for loss in losses) <= 1e-6
    else:                # each rank its own rows: the halves differ
        assert abs(losses[0] - losses[1]) > 1e-4


@pytest.mark.parametrize("local_loss", [False, True])
def test_gather_with_grad_gives_the_global_gradient_after_the_mean(ranks, single, local_loss):
    """Gradients flow back to each rank's shard: the data-parallel mean equals the one-process gradient."""
    key = f"{int(local_loss)}1"
    for name in ("image", "text"):
        mean = np.concatenate([r[f"{key}_{name}"] for r in ranks]) / WORLD
        np.testing.assert_allclose(mean, single[name], atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.mean([r[f"{key}_scale"] for r in ranks], axis=0), single["scale"], atol=1e-6,
                               rtol=0)


def test_without_grad_the_local_rows_carry_their_own_gradient(ranks, single):
    """open_clip's default (no gather_with_grad, no local_loss): each rank differentiates the global loss through
    its own rows only, so its shard gets exactly the one-process gradient of those rows."""
    for name in ("image", "text"):
        local = np.concatenate([r[f"00_{name}"] for r in ranks])
        np.testing.assert_allclose(local, single[name], atol=1e-6, rtol=0)
    assert np.abs(single["image"]).max() > 1e-3   # the comparison is not between zeros


if __name__ == "__main__":
    worker(sys.argv[1])

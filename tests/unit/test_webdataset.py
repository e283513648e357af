"""Webdataset tar shards: scripts/make_shards.py writes them from a caption table; mindram.data.WebDataset streams
them (bounded memory), splits them across ranks, skips and counts corrupt samples, resumes, and trains exactly
like the in-memory source in the same sample order."""
import csv
import io
import json
import sys
import tarfile
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from mindram.config import parse_scalar
from mindram.data import CaptionTable, SyntheticCaptions, WebDataset, shard_pipelines
from mindram.data.webdataset import _ShardStream, build_webdataset_pipeline, expand_urls
from mindram.errors import OutputExistsError
from mindram.models.clip.image_processing import CLIPImageProcessor
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import make_shards  # noqa: E402

SAMPLES, SHARD_SIZE, IMAGE = 48, 12, 32


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A caption table of PNG images (synthetic captioned shapes)."""
    root = tmp_path_factory.mktemp("table")
    source = SyntheticCaptions(num_samples=SAMPLES, image_size=IMAGE, split="train")
    with open(root / "captions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["filepath", "title"])
        for i in range(SAMPLES):
            record = source[i]
            Image.fromarray(record.image).save(root / f"{i}.png")
            writer.writerow([f"{i}.png", record.caption])
    return root / "captions.csv"


@pytest.fixture(scope="module")
def shards(table, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    assert make_shards.main(["--csv", str(table), "--output", str(out), "--shard_size", str(SHARD_SIZE)]) == 0
    return out


def urls(folder, count=SAMPLES // SHARD_SIZE):
    return f"{folder}/{{00000..{count - 1:05d}}}.tar"


def test_make_shards_writes_open_clip_layout(shards, table):
    assert json.loads((shards / "sizes.json").read_text()) == {f"{i:05d}.tar": SHARD_SIZE for i in range(4)}
    with tarfile.open(shards / "00001.tar") as tar:
        names = tar.getnames()
        assert names[:2] == [f"{SHARD_SIZE:09d}.png", f"{SHARD_SIZE:09d}.txt"]
        caption = tar.extractfile(names[1]).read().decode()
    assert caption == CaptionTable(table)[SHARD_SIZE].caption
    with pytest.raises(OutputExistsError):
        make_shards.main(["--csv", str(table), "--output", str(shards)])


def test_expand_urls_keeps_padding_and_joins_lists():
    assert [p.name for p in expand_urls("/d/{00008..00011}.tar")] == ["00008.tar", "00009.tar", "00010.tar",
                                                                       "00011.tar"]
    assert [str(p) for p in expand_urls("/a/x.tar::/b/{1..2}.tar")] == ["/a/x.tar", "/b/1.tar", "/b/2.tar"]


def batches(dataset):
    return [tuple(np.asarray(c) for c in b) for b in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)]


def test_ranks_read_disjoint_shards_and_resume_is_exact(shards):
    source = WebDataset(urls(shards))
    processor = CLIPImageProcessor(image_size=IMAGE)
    assert len(source) == SAMPLES
    with shard_pipelines(2, 1):
        assert source.rank_shards(2, 1) == [1, 3] and len(source) == SAMPLES
    full = batches(build_webdataset_pipeline(source, processor, batch_size=4, shuffle=True, num_workers=1,
                                             seed=5, context_length=16))
    assert len(full) == SAMPLES // 4
    resumed = batches(build_webdataset_pipeline(source, processor, batch_size=4, shuffle=True, num_workers=1,
                                                seed=5, context_length=16, start_step=7))
    assert len(resumed) == len(full) - 7
    for a, b in zip(full[7:], resumed):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # shuffling visits the shards in another order per epoch
    order = _ShardStream(source, [0, 1, 2, 3], SAMPLES, True, 5, 0, 0)
    assert order.shard_order(0) != order.shard_order(1)


def test_corrupt_members_are_skipped_counted_and_replaced(shards, tmp_path):
    with tarfile.open(shards / "00000.tar") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        for info, data in members:
            if info.name == "000000003.png":
                data = data[:40]                      # truncated image
            if info.name == "000000005.txt":
                continue                              # sample without caption
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    source = WebDataset(str(tmp_path / "00000.tar"))   # no sizes.json: counted from the tar headers
    assert len(source) == SHARD_SIZE
    out = batches(build_webdataset_pipeline(source, CLIPImageProcessor(image_size=IMAGE), batch_size=4,
                                            shuffle=False, num_workers=1, context_length=16))
    assert len(out) == 3                                # the epoch keeps its steps (2 samples wrapped around)
    assert source.stats.num_bad == 2
    assert sorted(source.stats.bad_items) == [3, 5]
    assert "00000.tar: sample 000000003: DataError" in source.stats.bad_items[3] or \
        "00000.tar: sample 000000003" in source.stats.bad_items[3]
    assert "no caption member" in source.stats.bad_items[5]


def test_memory_stays_flat_as_the_shard_count_grows(shards, tmp_path):
    """Streaming all samples of 16 shards needs no more memory than streaming 4 (no per-sample index)."""
    for i in range(16):
        (tmp_path / f"{i:05d}.tar").write_bytes((shards / f"{i % 4:05d}.tar").read_bytes())

    def peak(count):
        source = WebDataset(urls(tmp_path, count))
        tracemalloc.start()
        for _ in _ShardStream(source, list(range(count)), count * SHARD_SIZE, False, 0, 0, 0):
            pass
        peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak_bytes

    small, large = peak(4), peak(16)
    print(f"peak traced memory streaming 4 shards {small / 1e3:.0f} kB, 16 shards {large / 1e3:.0f} kB")
    assert large < 1.5 * small + 100_000


def train_losses(tmp_path, data_loader):
    """Per-step training losses of the tiny CLIP on ``data_loader`` (same seed, no shuffling)."""
    from mindram import Trainer
    from tests.st.test_run_mindformer import DEMO, TINY

    overrides = {k: parse_scalar(v) for k, _, v in (o.partition("=") for o in TINY)
                 if not k.startswith(("train_dataset", "eval_dataset"))}
    overrides.update({"eval_dataset": None, "output_dir": str(tmp_path), "train_dataset.shuffle": False,
                      "train_dataset.data_loader": data_loader, "runner_config.batch_size": 8,
                      "runner_config.max_steps": 5, "runner_config.logging_steps": 1, "runner_config.save_steps": 5,
                      "lr_schedule.warmup_steps": 0})
    return [r["loss"] for r in Trainer(args=DEMO, overrides=overrides).train()["history"]]


@pytest.mark.slow
def test_training_on_shards_matches_the_in_memory_source(shards, table, tmp_path):
    streamed = train_losses(tmp_path / "shards", {"type": "WebDataset", "urls": urls(shards)})
    in_memory = train_losses(tmp_path / "table", {"type": "CaptionTable", "path": str(table)})
    print("losses", np.round(streamed, 6))
    assert len(streamed) == 5 and len(set(np.round(streamed, 4))) > 1
    np.testing.assert_allclose(streamed, in_memory, rtol=0, atol=1e-6)

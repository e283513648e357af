"""PaddleMIX's laion.filelist (mindram.data.LaionFileList): part files of tab-separated lines (JSON caption in
column 2, base64 image in column 5), plain or gzip, streamed like webdataset shards; bad lines skipped and counted."""
import base64
import gzip
import io
import json

import numpy as np
import pytest
from PIL import Image

from mindram.data import LaionFileList, SyntheticCaptions
from mindram.data.webdataset import build_webdataset_pipeline
from mindram.errors import DataError
from mindram.models.clip.image_processing import CLIPImageProcessor
from mindram.trainer.run_config import build_source


def line(image, meta):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    columns = ["id", "url", json.dumps(meta), "w", "h", base64.b64encode(buf.getvalue()).decode("ascii")]
    return ("\t".join(columns) + "\n").encode("utf-8")


@pytest.fixture
def laion(tmp_path):
    """Two parts (one gzip) of 5 lines each: 8 good samples, one corrupt line, one 3-px image."""
    source = SyntheticCaptions(num_samples=8, image_size=32, split="train")
    good = [line(source[i].image, {"caption_en": source[i].caption} if i % 2 else
                 {"blip_caption_en": source[i].caption}) for i in range(8)]
    tiny = line(np.zeros((3, 3, 3), np.uint8), {"caption_en": "too small"})
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "part-00000").write_bytes(b"".join(good[:4]) + b"broken line without columns\n")
    with gzip.open(tmp_path / "parts" / "part-00001.gz", "wb") as f:
        f.write(b"".join(good[4:]) + tiny)
    (tmp_path / "laion.filelist").write_text("parts/part-00000\nparts/part-00001.gz\n", encoding="utf-8")
    return tmp_path / "laion.filelist", [source[i].caption for i in range(8)]


def test_lines_are_decoded_and_bad_ones_skipped_and_counted(laion):
    file_list, captions = laion
    source = build_source({"type": "LaionFileList", "dataset_dir": str(file_list)})
    assert isinstance(source, LaionFileList) and source.sizes == [5, 5] and len(source) == 10
    dataset = build_webdataset_pipeline(source, CLIPImageProcessor(image_size=32), batch_size=2, shuffle=False,
                                        num_workers=1, context_length=16)
    batches = list(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert len(batches) == 5 and batches[0][0].shape == (2, 3, 32, 32)
    assert source.stats.num_bad == 2  # the corrupt line and the 3-px image, each logged once
    from mindram.models.clip.tokenizer import tokenize
    first_ids = tokenize(captions[:2], context_length=16)
    np.testing.assert_array_equal(batches[0][1], first_ids)  # captions from caption_en / blip_caption_en


def test_missing_files_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        LaionFileList(tmp_path / "laion.filelist")
    (tmp_path / "laion.filelist").write_text("nowhere/part-00000\n")
    with pytest.raises(DataError, match="1 of 1 shard"):
        LaionFileList(tmp_path / "laion.filelist")

"""run_mindformer.py --predict_data DIR: one JSON line per image (recursive), resumable after a kill."""
import json

import numpy as np
import pytest
from PIL import Image

from mindram import Trainer
from mindram.config import parse_options
from mindram.errors import DataError
from mindram.utils.jsonl_predictions import expand_inputs, predict_to_jsonl
from tests.st.test_run_mindformer import DEMO, TINY, last_json, run


def make_tree(root):
    rng = np.random.default_rng(0)
    paths = []
    for rel in ("a/one.png", "a/b/two.JPG", "three.jpeg", "c/four.png", "c/five.bmp"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    (root / "c" / "broken.png").write_bytes(b"not an image")
    (root / "notes.txt").write_text("not an image and not an image suffix")
    return sorted(paths + [str(root / "c" / "broken.png")])


def test_expand_inputs_and_refusals(tmp_path):
    expected = make_tree(tmp_path / "imgs")
    assert expand_inputs([tmp_path / "imgs", "https://x.org/a.png"]) == expected + ["https://x.org/a.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        expand_inputs([tmp_path / "empty"])
    other = tmp_path / "other.jsonl"
    other.write_text('{"something": 1}\n')
    with pytest.raises(DataError, match="not a prediction line"):
        predict_to_jsonl(lambda chunk: [{"input": c} for c in chunk], ["x"], other)


@pytest.mark.slow
def test_folder_predict_writes_one_line_per_image_and_resumes(tmp_path):
    images = make_tree(tmp_path / "imgs")
    trainer = Trainer(args=DEMO, overrides=parse_options(TINY + [f"output_dir={tmp_path / 'unused'}"]))
    trainer.model.save_pretrained(tmp_path / "model")
    common = ["--config", DEMO, "--run_mode", "predict", "--load_checkpoint", tmp_path / "model", "--top_k", "2",
              "--output_dir", tmp_path / "out", "--options", *TINY, "runner_config.eval_batch_size=2"]

    first = run(*common, "--predict_data", tmp_path / "imgs")
    assert first.returncode == 0, first.stderr[-3000:]
    summary = last_json(first.stdout)
    output = tmp_path / "out" / "predictions.jsonl"
    assert summary["output"] == str(output) and summary["num_written"] == 6 and summary["num_failed"] == 1
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["input"] for line in lines] == images
    broken = [line for line in lines if line["input"].endswith("broken.png")]
    assert "error" in broken[0] and "cannot read image file" in broken[0]["error"]
    assert all(len(line["predictions"]) == 2 for line in lines if "error" not in line)

    # a kill mid-write: two whole lines and half of the third remain; the rerun finishes the rest once
    text = output.read_text().splitlines(keepends=True)
    output.write_text("".join(text[:2]) + text[2][:10])
    again = run(*common, "--predict_data", tmp_path / "imgs")
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = last_json(again.stdout)
    assert resumed["num_already_written"] == 2 and resumed["num_written"] == 4
    assert "incomplete last line" in again.stderr
    assert [json.loads(line) for line in output.read_text().splitlines()] == lines

    # everything failing is exit 1, naming the file that holds the errors
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"nope")
    failed = run(*common, "--predict_data", tmp_path / "bad", "--predict_output", tmp_path / "bad.jsonl")
    assert failed.returncode == 1 and str(tmp_path / "bad.jsonl") in failed.stderr

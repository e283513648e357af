"""Off the happy path, as users run the commands: one-line errors with exit code 2 (a traceback only with
--debug), exit code 1 when the run itself fails, per-input predict errors, and log lines that never share a
line with a tqdm bar. Tiny configs and synthetic data: most cases fail before any model is built."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import run_mindformer
from tests.conftest import ROOT
from tests.st.test_run_mindformer import DEMO, TINY, last_json, run

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
NO_EVAL = [*TINY, "eval_dataset=null"]


def script(name, *args):
    """scripts/``name`` with ``args`` in a subprocess."""
    env = dict(os.environ, GLOG_v="3")
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=str(ROOT), timeout=600)


def error_line(result, prog="run_mindformer.py"):
    """The one-line error of a failed command (asserting there is no traceback), without its prefix."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(f"{prog}: error: "), result.stderr[-3000:]
    assert sum(line.startswith(f"{prog}: error: ") for line in lines) == 1
    return lines[-1][len(f"{prog}: error: "):]


def write(path, data):
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def image(path, color=(220, 30, 30)):
    Image.new("RGB", (32, 32), color).save(path)
    return path


# ---------------------------------------------------------------- config files (item 1, 7)
def test_missing_config_file(tmp_path):
    result = run("--config", tmp_path / "nowhere.yaml")
    assert result.returncode == 2
    assert "config file not found" in error_line(result) and "nowhere.yaml" in error_line(result)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    config = write(tmp_path / "broken.yaml", "seed: 0\nrunner_config: {batch_size: 4\noptimizer: x\n")
    result = run("--config", config)
    assert result.returncode == 2
    line = error_line(result)
    assert f"{config}:3:10: invalid YAML: expected ',' or '}}'" in line and "started at line 2" in line


def test_non_utf8_yaml_names_the_file(tmp_path):
    config = write(tmp_path / "latin1.yaml", "seed: 0\nname: caf\xe9\n".encode("latin-1"))
    result = run("--config", config)
    assert result.returncode == 2
    assert f"{config}: not UTF-8 text (byte 0xe9 at offset 17)" in error_line(result)


def test_base_config_cycle_names_the_chain(tmp_path):
    write(tmp_path / "a.yaml", "base_config: b.yaml\n")
    write(tmp_path / "b.yaml", "base_config: a.yaml\n")
    result = run("--config", tmp_path / "a.yaml")
    assert result.returncode == 2
    chain = " -> ".join(str(tmp_path / name) for name in ("a.yaml", "b.yaml", "a.yaml"))
    assert f"base_config cycle: {chain}" in error_line(result)


@pytest.mark.parametrize("mode", ["bogus", "trian"])
def test_unknown_run_mode_in_yaml_is_refused(tmp_path, mode):
    config = write(tmp_path / "run.yaml", f"base_config: {DEMO}\nrun_mode: {mode}\n")
    result = run("--config", config, "--output_dir", tmp_path / "out")
    assert result.returncode == 2
    assert f"run_mode: unknown mode '{mode}'; allowed: train, eval, predict, finetune" in error_line(result)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- flags and paths (item 1, 4)
@pytest.mark.parametrize("args,expected", [
    (["--options", *NO_EVAL, "runner_config.max_steps"], "--options 'runner_config.max_steps': expected KEY=VALUE"),
    (["--resume_training", "latest", "--options", *NO_EVAL], "resume_from_checkpoint='latest' but"),
    (["--run_mode", "predict", "--options", *NO_EVAL], "--run_mode predict needs --predict_data"),
], ids=["options-without-equals", "resume-without-checkpoint", "predict-without-data"])
def test_flag_errors_are_one_line(tmp_path, args, expected):
    result = run("--config", DEMO, "--output_dir", tmp_path / "out", *args)
    assert result.returncode == 2
    assert expected in error_line(result)
    assert not (tmp_path / "out").exists()


def test_output_dir_under_a_file(tmp_path):
    blocker = write(tmp_path / "file", "not a folder")
    result = run("--config", DEMO, "--output_dir", blocker / "run", "--options", *NO_EVAL)
    assert result.returncode == 2
    assert f"output_dir {blocker / 'run'}: cannot be created: {blocker} is a file" in error_line(result)


def test_unavailable_device_target():
    if "GPU" in run_mindformer.supported_device_targets():
        pytest.skip("this MindSpore build supports GPU")
    result = run("--config", DEMO, "--device_target", "GPU")
    assert result.returncode == 2
    assert error_line(result).startswith("device_target GPU (--device_target or the config's context.device_target): "
                                      "this MindSpore build supports only CPU")


@pytest.mark.parametrize("top_k", ["0", "-1"])
def test_predict_top_k_must_be_positive(tmp_path, top_k):
    result = run("--config", DEMO, "--run_mode", "predict", "--predict_data", image(tmp_path / "red.png"),
                 "--top_k", top_k, "--output_dir", tmp_path / "out", "--options", *TINY)
    assert result.returncode == 2
    assert "predict top_k" in error_line(result) and f"expected None or a positive int, got {top_k}" in error_line(result)


def test_debug_shows_the_traceback(tmp_path):
    result = run("--config", tmp_path / "nowhere.yaml", "--debug")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ConfigError: config file not found" in result.stderr


# ---------------------------------------------------------------- data and checkpoints (item 1)
def test_empty_dataset_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("--config", DEMO, "--train_dataset_dir", tmp_path / "empty", "--output_dir", tmp_path / "out",
                 "--options", *NO_EVAL, "train_dataset.data_loader={type: image_folder}")
    assert result.returncode == 2
    assert f"{tmp_path / 'empty'}" in error_line(result)


def test_corrupt_load_checkpoint(tmp_path):
    ckpt = write(tmp_path / "model.ckpt", np.random.default_rng(0).bytes(1000))
    result = run("--config", DEMO, "--load_checkpoint", ckpt, "--output_dir", tmp_path / "out",
                 "--options", *NO_EVAL)
    assert result.returncode == 2
    assert "model.ckpt" in error_line(result)


def test_unconverted_model_name(tmp_path, monkeypatch):
    monkeypatch.setenv("MINDRAM_HOME", str(tmp_path / "home"))
    result = run("--config", DEMO, "--load_checkpoint", "clip_vit_b_32", "--output_dir", tmp_path / "out",
                 "--options", *NO_EVAL)
    assert result.returncode == 2
    line = error_line(result)
    assert "clip_vit_b_32" in line and "convert_clip.py" in line


# ---------------------------------------------------------------- outcomes: exit code 1 (item 1, 3)
def test_nonfinite_loss_stops_with_exit_1(tmp_path):
    result = run("--config", DEMO, "--output_dir", tmp_path / "out", "--options", *NO_EVAL,
                 "runner_config.max_steps=4", "runner_config.max_grad_norm=null", "lr_schedule.warmup_steps=0",
                 "lr_schedule.learning_rate=1e30")
    assert result.returncode == 1, result.stderr[-3000:]
    assert error_line(result).startswith("non-finite loss")


def test_predict_reports_each_failed_input(tmp_path):
    good = image(tmp_path / "red.png")
    broken = write(tmp_path / "broken.png", b"not a png")
    missing = tmp_path / "missing.png"
    result = run("--config", DEMO, "--run_mode", "predict", "--predict_data", good, broken, missing,
                 "--top_k", "2", "--output_dir", tmp_path / "out", "--options", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    entries = last_json(result.stdout)
    assert len(entries) == 3 and len(entries[0]) == 2 and {"label", "score"} <= set(entries[0][0])
    assert entries[1]["input"] == str(broken) and "cannot read image file" in entries[1]["error"]
    assert entries[2]["input"] == str(missing) and "not found" in entries[2]["error"]
    assert "2 of 3 predict inputs failed" in result.stderr


def test_predict_exits_1_when_every_input_failed(tmp_path):
    broken = write(tmp_path / "broken.png", b"not a png")
    result = run("--config", DEMO, "--run_mode", "predict", "--predict_data", broken, tmp_path / "missing.png",
                 "--output_dir", tmp_path / "out", "--options", *TINY)
    assert result.returncode == 1
    entries = last_json(result.stdout)
    assert [entry["input"] for entry in entries] == [str(broken), str(tmp_path / "missing.png")]
    assert "none of the 2 --predict_data inputs could be used" in error_line(result)


# ---------------------------------------------------------------- flags → config (item 5), --options values
def test_overwrite_output_dir_flag_sets_the_runner_option():
    parser = run_mindformer.build_parser()
    args = parser.parse_args(["--config", "x.yaml", "--overwrite_output_dir"])
    assert run_mindformer.build_overrides(args)["runner_config.overwrite_output_dir"] is True
    assert "runner_config.overwrite_output_dir" not in run_mindformer.build_overrides(
        parser.parse_args(["--config", "x.yaml"]))


def test_options_read_exponent_numbers_as_floats():
    args = run_mindformer.build_parser().parse_args(
        ["--config", "x.yaml", "--options", "lr_schedule.learning_rate=1e-4", "a=3", "b=x1e5", "c=[1, 2]"])
    assert run_mindformer.build_overrides(args) == {"lr_schedule.learning_rate": 1e-4, "a": 3, "b": "x1e5",
                                                   "c": [1, 2]}


def test_help_documents_debug_and_exit_codes():
    text = run_mindformer.build_parser().format_help()
    assert "--debug" in text and "--overwrite_output_dir" in text
    assert re.search(r"Exit codes:\s+0 .*\n(.*\n)*\s+1 .*every predict input failed(.*\n)*\s+2 ", text)


# ---------------------------------------------------------------- log lines vs tqdm bars (item 6)
def test_log_lines_never_share_a_line_with_the_progress_bar(tmp_path):
    log = tmp_path / "stderr.txt"
    with open(log, "w", encoding="utf-8") as stderr:
        result = subprocess.run(
            [sys.executable, str(ROOT / "run_mindformer.py"), "--config", str(DEMO), "--output_dir",
             str(tmp_path / "out"), "--options", *NO_EVAL, "runner_config.max_steps=4",
             "runner_config.logging_steps=1"],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=dict(os.environ, GLOG_v="3"), timeout=600)
    text = log.read_text(encoding="utf-8")
    assert result.returncode == 0, text[-3000:]
    assert "train contrastive_language_image_pretrain" in text  # the bar was drawn into the file
    info = [line for line in text.splitlines() if " INFO " in line]  # splitlines splits at the bar's \r too
    assert any("step 4 epoch" in line for line in info)
    assert all(TIMESTAMP.match(line) for line in info), [line for line in info if not TIMESTAMP.match(line)]


# ---------------------------------------------------------------- scripts
def test_export_embeddings_missing_images_before_the_model_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("MINDRAM_HOME", str(tmp_path / "home"))  # clip_vit_b_32 is not there: must not be loaded
    result = script("export_embeddings.py", "--model", "clip_vit_b_32", "--images", tmp_path / "nowhere",
                    "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "--images" in error_line(result, "export_embeddings.py")


def test_example_scripts_report_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MINDRAM_HOME", str(tmp_path / "home"))
    result = script("example_pretrain.py", "--config", tmp_path / "nowhere.yaml")
    assert result.returncode == 2 and "config file not found" in error_line(result, "example_pretrain.py")
    result = script("example_zero_shot.py", "--model", "clip_vit_b_32", "--images", image(tmp_path / "a.png"),
                    "--labels", "red", "blue")
    assert result.returncode == 2 and "clip_vit_b_32" in error_line(result, "example_zero_shot.py")
    result = script("demo_zero_shot.py", "--image", tmp_path / "missing.jpg")
    assert result.returncode == 2 and "missing.jpg" in error_line(result, "demo_zero_shot.py")

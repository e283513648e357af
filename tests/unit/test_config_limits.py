"""Bounds on what one YAML config may cost (mindram.config.CONFIG_LIMITS): alias bombs, deep nesting, recursive
aliases, oversized files, repeated base_config files and --options values are refused fast with a one-line
ConfigError naming the file and the limit; ordinary anchors, aliases and merge keys still work."""
import os
import re
import subprocess
import sys
import time
import tracemalloc

import pytest

from mindram.config import MindFormerConfig, parse_options, parse_scalar
from mindram.errors import ConfigError
from tests.conftest import ROOT

DEMO = ROOT / "configs" / "clip" / "run_clip_demo_synthetic.yaml"

NODES_LIMIT = "MINDRAM_CONFIG_MAX_NODES"
DEPTH_LIMIT = "MINDRAM_CONFIG_MAX_DEPTH"
BYTES_LIMIT = "MINDRAM_CONFIG_MAX_BYTES"


def alias_bomb(levels=8, width=10):
    """YAML whose last alias expands to ``width ** (levels + 1)`` scalars in a few hundred bytes."""
    lines = ["a0: &a0 [" + ", ".join(["x"] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def refused(path, match, where=None):
    """The ConfigError loading ``path`` raises, checked to come within 2 s and 50 MB of Python allocations and to
    start with ``where`` (default: ``path``)."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ConfigError, match=match) as info:
            MindFormerConfig(str(path))
        elapsed, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 2.0, f"refused after {elapsed:.1f} s"
    assert peak < 50e6, f"peak {peak / 1e6:.0f} MB before refusing"
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(where or path))
    return message


def test_alias_bomb_is_refused_before_it_expands(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(levels=7), encoding="utf-8")   # 10**8 scalars after expansion
    assert path.stat().st_size < 500
    message = refused(path, "expands to more than 100000 YAML nodes")
    assert NODES_LIMIT in message


def test_deep_flow_nesting_is_refused_fast(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 10_000 + "\n", encoding="utf-8")
    assert DEPTH_LIMIT in refused(path, "nested deeper than 64 levels")


def test_deep_block_nesting_is_refused_fast(tmp_path):
    path = tmp_path / "deep_block.yaml"
    path.write_text("- " * 10_000 + "x\n", encoding="utf-8")
    assert DEPTH_LIMIT in refused(path, "nested deeper than 64 levels")


def test_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "recursive.yaml"
    path.write_text("ok: 1\nloop: &a {self: *a}\n", encoding="utf-8")
    refused(path, r":2:\d+: alias \*a is inside the node it refers to")


def test_oversized_file_is_refused_without_reading_it_whole(tmp_path, monkeypatch):
    path = tmp_path / "big.yaml"
    path.write_text("names: [" + ", ".join(["cat"] * 2000) + "]\n", encoding="utf-8")
    monkeypatch.setenv(BYTES_LIMIT, "4096")
    assert BYTES_LIMIT in refused(path, "larger than the limit of 4096 bytes")
    monkeypatch.setenv(BYTES_LIMIT, str(1 << 20))
    assert len(MindFormerConfig(str(path)).names) == 2000


def test_limits_are_raised_by_environment_variables(tmp_path, monkeypatch):
    path = tmp_path / "wide.yaml"
    path.write_text(alias_bomb(levels=2), encoding="utf-8")   # 1 + 3 keys + 10 + 100 + 1000 ... nodes
    assert len(MindFormerConfig(str(path)).a2) == 10
    monkeypatch.setenv(NODES_LIMIT, "500")
    refused(path, "more than 500 YAML nodes")
    monkeypatch.setenv(NODES_LIMIT, "5000")
    assert MindFormerConfig(str(path)).a2[9][9] == ["x"] * 10
    nested = tmp_path / "nested.yaml"
    nested.write_text("a: " + "[" * 80 + "]" * 80 + "\n", encoding="utf-8")
    refused(nested, "nested deeper than 64 levels")
    monkeypatch.setenv(DEPTH_LIMIT, "100")
    value, levels = MindFormerConfig(str(nested)).a, 1
    while value:
        value, levels = value[0], levels + 1
    assert levels == 80


@pytest.mark.parametrize("value", ["lots", "0", "-3", "1.5"])
def test_bad_limit_variable_is_a_config_error(tmp_path, monkeypatch, value):
    path = tmp_path / "ok.yaml"
    path.write_text("a: 1\n", encoding="utf-8")
    monkeypatch.setenv(NODES_LIMIT, value)
    with pytest.raises(ConfigError, match=rf"{NODES_LIMIT}='{value}': expected a positive int"):
        MindFormerConfig(str(path))


def test_anchors_aliases_and_merge_keys_still_work(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text("defaults: &opt {type: AdamWeightDecay, eps: 1.0e-6, weight_decay: 0.1}\n"
                    "optimizer: {<<: *opt, weight_decay: 0.2}\n"
                    "sizes: &sizes [64, 128]\n"
                    "both: [*sizes, *sizes]\n"
                    "name: &n clip\n"
                    "names: [*n, *n]\n", encoding="utf-8")
    cfg = MindFormerConfig(str(path))
    assert cfg.optimizer.to_dict() == {"type": "AdamWeightDecay", "eps": 1e-6, "weight_decay": 0.2}
    assert cfg.both == [[64, 128], [64, 128]] and cfg.names == ["clip", "clip"]
    cfg.both[0].append(256)   # aliased nodes are independent copies in the config
    assert cfg.both[1] == [64, 128] and cfg.sizes == [64, 128]


def test_a_base_file_named_many_times_is_read_once(tmp_path):
    """Each file names the next one 40 times: 40**3 merges if every mention were read again."""
    (tmp_path / "c.yaml").write_text("leaf: {x: 1}\n", encoding="utf-8")
    for name, base in (("b", "c"), ("a", "b"), ("top", "a")):
        (tmp_path / f"{name}.yaml").write_text(f"base_config: [{', '.join([f'{base}.yaml'] * 40)}]\n{name}: 1\n",
                                               encoding="utf-8")
    start = time.perf_counter()
    cfg = MindFormerConfig(str(tmp_path / "top.yaml"))
    assert time.perf_counter() - start < 2.0
    assert cfg.to_dict() == {"leaf": {"x": 1}, "b": 1, "a": 1, "top": 1}


def test_node_limit_counts_base_config_files_together(tmp_path, monkeypatch):
    (tmp_path / "base.yaml").write_text("names: [" + ", ".join(["cat"] * 300) + "]\n", encoding="utf-8")
    (tmp_path / "run.yaml").write_text("base_config: base.yaml\nmore: [" + ", ".join(["dog"] * 300) + "]\n",
                                       encoding="utf-8")
    monkeypatch.setenv(NODES_LIMIT, "500")
    message = refused(tmp_path / "run.yaml", "more than 500 YAML nodes", where=tmp_path / "base.yaml")
    assert message.endswith(f"(included via {tmp_path / 'run.yaml'})")


def test_option_value_alias_bomb_is_refused_naming_the_option():
    value = ("[&a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a], "
             "&c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b], &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c], "
             "[*d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d]]")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"^--options model.sizes:1:\d+: the config expands to more than 100000"):
        parse_options([f"model.sizes={value}"])
    assert time.perf_counter() - start < 1.0
    assert parse_options(["a=[&x 1, *x]", "b=cat"]) == {"a": [1, 1], "b": "cat"}


@pytest.mark.parametrize("text,match", [
    ("a: " + "1" * 5000 + "\n", r"a value YAML cannot construct: Exceeds the limit \(4300 digits\)"),
    ("when: 2020-13-45\n", r"a value YAML cannot construct: month must be in 1\.\.12"),
])
def test_values_yaml_cannot_construct_are_config_errors(tmp_path, text, match):
    path = tmp_path / "values.yaml"
    path.write_text(text, encoding="utf-8")
    refused(path, match)


def test_option_value_yaml_cannot_construct_names_the_option():
    with pytest.raises(ConfigError, match=r"^--options tagging.since: a value YAML cannot construct: month must"):
        parse_options(["tagging.since=2020-13-45"])
    assert parse_scalar("2020-12-31").year == 2020


@pytest.mark.slow
@pytest.mark.parametrize("text,options,message", [
    (alias_bomb(levels=7), [], r"run.yaml:\d+:\d+: the config expands to more than 100000 YAML nodes"),
    ("a: " + "[" * 10_000 + "\n", [], r"run.yaml:1:\d+: nested deeper than 64 levels"),
    (f"base_config: {DEMO}\ncontext: 3\n", [], r"context: expected a mapping, got 3"),
    (f"base_config: {DEMO}\n", ["lr_schedule.warmup_steps=.nan"],
     r"lr_schedule.warmup_steps: expected an int >= 0, got nan"),
])
def test_run_mindformer_reports_a_hostile_config_in_one_line(tmp_path, text, options, message):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "run.yaml").write_text(text, encoding="utf-8")
    command = [sys.executable, str(ROOT / "run_mindformer.py"), "--config", "run.yaml",
               "--output_dir", str(tmp_path / "out"), "--options", *options]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, GLOG_v="3"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr[-2000:]
    assert re.match(rf"run_mindformer.py: error: (\S*/)?{message}", errors[0]), errors[0]
    assert not (tmp_path / "out").exists()

"""Seeded fuzzing of the run-config parser: a few hundred mutations of a shipped run config (byte flips,
truncation, duplicated lines, anchors/aliases and alias bombs, deep nesting, type swaps) loaded through the
Trainer's entry point. Each must either load and validate or raise a MindramError subclass: no other exception,
no hang (each case has a timer), bounded time and peak memory (the process's high-water mark may grow by at
most PEAK_GROWTH_BYTES over the whole run: tracemalloc would make the run several times slower)."""
import random
import re
import resource
import signal
import time

import pytest

from mindram import Trainer
from mindram.errors import MindramError
from tests.conftest import ROOT

SOURCE = ROOT / "configs" / "clip" / "run_clip_demo_synthetic.yaml"
SEED = 20240611
CASES = 300
CASE_SECONDS = 3.0          # a case still running after this is a hang
TOTAL_SECONDS = 15.0
PEAK_GROWTH_BYTES = 200e6   # growth of the process's peak resident memory (ru_maxrss) over all the cases

SPECIAL = b"[]{}:,-&*!|>'\"#%@`?\n\t \\"
VALUES = ["3", "[1]", "{}", "null", "false", ".nan", "-.inf", "[a, b]", "{type: [x]}", "''", "1e400", "-1", "0",
          "2.5", "!!binary aGk=", "2020-13-45", "*nowhere", "{a: 1, a: 2}", "1" * 5000, "!!python/object:os.system x",
          "[[[[[[[[1]]]]]]]]", "{type: {a: 1}}", "~", "&x [*x]", "!!set {a, b}", "yes", "0x1F", "1_000"]
KEY_VALUE = re.compile(rb"^( *)([A-Za-z_][\w.]*): (.+)$", re.M)          # a block mapping's entry
FLOW_VALUE = re.compile(rb"([A-Za-z_]\w*): ([^,{}\[\]\n]+)")               # an entry inside {...} too


class Hang(BaseException):
    """A case ran past CASE_SECONDS (a BaseException so that no ``except Exception`` in the code swallows it)."""


def flip(rng, data):
    if not data:
        return data
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        pool = SPECIAL if rng.random() < 0.7 else bytes(range(256))
        data[rng.randrange(len(data))] = pool[rng.randrange(len(pool))]
    return bytes(data)


def truncate(rng, data):
    return data[:rng.randrange(len(data))] if data else data


def duplicate(rng, data):
    lines = data.splitlines(keepends=True)
    if not lines:
        return data
    start = rng.randrange(len(lines))
    chunk = lines[start:start + rng.randint(1, 6)]
    at = rng.randrange(len(lines) + 1)
    return b"".join(lines[:at] + chunk + lines[at:])


def swap_value(rng, data):
    """Replace one value (a whole line's, or one inside a flow mapping) by another type or an odd value."""
    pattern, group = (KEY_VALUE, 3) if rng.random() < 0.4 else (FLOW_VALUE, 2)
    matches = list(pattern.finditer(data))
    if not matches:
        return data
    match = rng.choice(matches)
    return data[:match.start(group)] + rng.choice(VALUES).encode() + data[match.end(group):]


def swap_section(rng, data):
    name = rng.choice([b"optimizer", b"lr_schedule", b"model", b"trainer", b"runner_config", b"train_dataset",
                       b"zero_shot", b"context", b"processor", b"parallel", b"tagging", b"recompute_config"])
    return data + b"\n" + name + b": " + rng.choice(VALUES).encode() + b"\n"


def alias(rng, data):
    """Anchor one value and alias it elsewhere, or append an alias bomb of random width and depth."""
    matches = [m for m in KEY_VALUE.finditer(data) if not m.group(3).startswith((b"&", b"*", b"!"))]
    if rng.random() < 0.5 and matches:
        source, target = rng.choice(matches), rng.choice(matches)
        if source.start() != target.start():
            first, second = sorted((source, target), key=lambda m: m.start())
            return (data[:first.start(3)] + b"&fz " + data[first.start(3):second.start(3)] + b"*fz"
                    + data[second.end(3):])
    width, levels = rng.randint(2, 12), rng.randint(2, 9)
    lines = [f"b0: &b0 [{', '.join(['x'] * width)}]"]
    lines += [f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return data + b"\n" + "\n".join(lines).encode() + b"\n"


def nest(rng, data):
    depth = rng.choice([10, 63, 65, 200, 5000])
    opener = rng.choice([b"[", b"{a: ", b"- "])
    if opener == b"- ":
        return data + b"\nnested:\n" + b"".join(b"  " * i + b"- \n" for i in range(min(depth, 300)))
    at = rng.randrange(len(data) + 1)
    return data[:at] + opener * depth + data[at:]


MUTATIONS = (flip, truncate, duplicate, swap_value, swap_section, alias, nest)


def mutants(seed=SEED, count=CASES):
    """``(case number, mutation names, bytes)`` of ``count`` mutants of SOURCE, 1-3 mutations each (a mutation
    that finds nothing to change in what the previous ones left changes nothing)."""
    rng = random.Random(seed)
    original = SOURCE.read_bytes()
    for case in range(count):
        data, names = original, []
        for mutation in rng.sample(MUTATIONS, rng.choices((1, 2, 3), weights=(6, 3, 1))[0]):
            data = mutation(rng, data)
            names.append(mutation.__name__)
        yield case, names, data


def _hang(signum, frame):  # pylint: disable=unused-argument
    raise Hang()


def test_mutated_run_configs_load_or_raise_mindram_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # relative output_dir / base_config paths stay in the temporary folder
    path = tmp_path / "run.yaml"
    failures, outcomes = [], {"loaded": 0, "refused": 0}
    previous = signal.signal(signal.SIGALRM, _hang)
    Trainer(args=str(SOURCE))   # imports and registries loaded before the baseline
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    try:
        for case, names, data in mutants():
            path.write_bytes(data)
            signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
            try:
                Trainer(args=str(path))
                outcomes["loaded"] += 1
            except MindramError as e:
                outcomes["refused"] += 1
                if "\n" in str(e):
                    failures.append((case, names, "multi-line message", str(e)[:200]))
            except Hang:
                failures.append((case, names, "hang", f"still running after {CASE_SECONDS} s"))
            except Exception as e:  # pylint: disable=broad-except  (what the test is looking for)
                failures.append((case, names, type(e).__name__, " ".join(str(e).split())[:200]))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        elapsed = time.perf_counter() - start
        growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak_before
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert not failures, f"{len(failures)} of {CASES} mutants (seed {SEED}) failed, e.g. {failures[:5]}"
    assert outcomes["loaded"] > 10 and outcomes["refused"] > 100, outcomes   # the mutants reach both outcomes
    assert elapsed < TOTAL_SECONDS, f"{CASES} mutants took {elapsed:.1f} s"
    assert growth < PEAK_GROWTH_BYTES, f"peak memory grew by {growth / 1e6:.0f} MB"


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.__name__)
def test_each_mutation_changes_the_config(mutation):
    rng, original = random.Random(SEED), SOURCE.read_bytes()
    assert any(mutation(rng, original) != original for _ in range(5))

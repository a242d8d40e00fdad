"""The scripts in examples/ run, and show what docs/composing.md says they show.

Each script runs in its own process (as a user runs it) on one small generated dataset:
7 videos of 2.5 s in three buckets, 3 of 1.25 s (``short/``) and 4 broken files. The code
blocks of docs/composing.md that name a script are checked to be taken from it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from media import make_example_data

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
COMPOSING = REPO / "docs" / "composing.md"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_example_data(tmp_path_factory.mktemp("examples") / "data")


def run_example(name: str, *args: str | Path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=240,
    )
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stderr[-4000:]}"
    return done.stdout


def test_quickstart(data: Path) -> None:
    out = run_example("quickstart.py", data)
    assert "14 source(s), 10 sample(s), 6 batch(es)" in out
    batches = re.findall(r"batch \d: pixels \((\d), 3, 17, (\d+), (\d+)\)", out)
    assert len(batches) == 6 and all(b == "2" for b, _, _ in batches)
    assert {(h, w) for _, h, w in batches} == {("64", "64"), ("80", "48"), ("48", "80")}
    skipped = re.findall(r"skipped (\S+) \[probe\] unreadable", out)
    assert sorted(skipped) == ["empty.mp4", "notes.mp4", "random_bytes.mp4", "truncated.mp4"]
    assert "config.shape.frames: (17,), config.shape.fps: 16.0" in out
    assert "the config gives the same samples: True" in out
    assert "replace() changed: {'resolution': ((48, 48),), 'batch_size': 1}" in out


def test_compose_filter_keeps_planned_full_batches_and_resume(data: Path) -> None:
    out = run_example("compose_filter.py", data)
    assert "7 sample(s) planned in 4 batch(es)" in out
    batches = re.findall(r"batch \d: (\d) clip\(s\) of bucket \{'[\dx]+'\}, gray (\w+)", out)
    assert batches == [("2", "True")] * 4  # full, one bucket each, the clip stage ran
    assert "min_duration skipped 3 file(s), reason 'filtered'" in out
    assert "shorter than 2 s" in out and "short/videos/clip_000.mp4" in out
    assert "grayscale stage: 8 clip(s) out" in out
    assert "identity: Filter:min_duration:v1:__main__.long_enough:shorter than 2 s" in out
    assert "resumed at batch 2: 2 batch(es), identical: True" in out
    assert "without the filter the state is refused: state fingerprint" in out


def test_hand_built_pipeline(data: Path) -> None:
    out = run_example("hand_built_pipeline.py", data)
    sizes = [int(n) for n in re.findall(r"batch \d: (\d) clip\(s\)", out)]
    assert sorted(sizes) == [1, 2, 2, 2]  # 7 clips: the odd bucket's last batch stays partial
    assert "4 batch(es), 1 partial" in out
    assert re.search(r"probe: in 14 out 10 failed 4", out)
    assert re.search(r"min_duration: in 10 out  7 failed 3", out)
    assert re.search(r"grayscale: in  7 out  7 failed 0", out)
    assert out.count("[min_duration] filtered") == 3 and out.count("[probe] unreadable") == 4
    assert "short/" not in "".join(re.findall(r"batch \d: .*", out))


def test_custom_stage_keeps_the_contract_and_a_bad_one_does_not(data: Path) -> None:
    out = run_example("custom_stage.py", data)
    assert "RandomFlip keeps the stage contract on 4 clip(s)" in out
    assert "GlobalNoise breaks it: (c)" in out and "two runs on the same inputs differ" in out
    flips = re.findall(r"epoch (\d): flipped (\[.*\])", out)
    assert [e for e, _ in flips] == ["0", "1", "2"]
    assert len({f for _, f in flips}) > 1  # the epoch changes which clips are flipped
    assert "in the dataset: 6 batch(es), random_flip out 12" in out


def test_cli_flags_and_the_cache_hint(data: Path) -> None:
    out = run_example("cli_flags.py", data)
    groups = "dataset, sources, shape, sampling, filters, batching, errors, latents, reuse"
    assert all(f"{g} options" in out for g in groups.split(", "))
    line = re.search(r"command: (wan-data cache .*)", out)
    assert line is not None
    assert "--frames 17 --resolution 64x64 --batch-size 2 --vae" in line.group(1)
    assert "the command rebuilds the config: True" in out
    assert "hint names the same command: True" in out
    assert f"`{line.group(1)}`" in out  # the hint itself, printed


def test_an_example_without_a_folder_generates_one_and_removes_it() -> None:
    out = run_example("hand_built_pipeline.py")
    made = re.search(r"generating a small dataset in (\S+)", out)
    assert made is not None and "4 batch(es), 1 partial" in out
    assert not Path(made.group(1)).exists()


def _blocks(text: str) -> list[tuple[str, list[str]]]:
    """(script, lines) of every python block of the doc whose first line names a script."""
    found = []
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        first, *rest = block.splitlines()
        named = re.fullmatch(r"# examples/(\w+\.py)", first.strip())
        if named:
            found.append((named.group(1), rest))
    return found


def test_the_code_blocks_of_composing_md_are_taken_from_the_scripts() -> None:
    blocks = _blocks(COMPOSING.read_text())
    assert {name for name, _ in blocks} >= {
        "quickstart.py",
        "compose_filter.py",
        "hand_built_pipeline.py",
        "custom_stage.py",
        "cli_flags.py",
    }
    for name, lines in blocks:
        script = [line.strip() for line in (EXAMPLES / name).read_text().splitlines()]
        at = 0
        for line in (line.strip() for line in lines):
            if not line or line == "...":
                continue
            try:
                at = script.index(line, at) + 1
            except ValueError:
                pytest.fail(f"docs/composing.md shows a line not in examples/{name}: {line!r}")

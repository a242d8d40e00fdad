"""examples/train_tiny_wan.py: a LoRA flow-matching loop on a tiny WanTransformer3DModel fed by
wan_data alone trains (its loss falls) in T2V and I2V mode, and resumes exactly mid-epoch from a
checkpoint into fresh objects (the same batches, keys and tensors, and the same losses)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("ftfy")

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "train_tiny_wan.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_tiny_wan", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of videos and tiny models for both modes (each mode adds what it needs)."""
    return tmp_path_factory.mktemp("train_tiny_wan")


@pytest.fixture
def threads() -> Iterator[None]:
    """main(--threads 1) sets torch's thread count for the process: put it back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("threads")
@pytest.mark.parametrize("mode", ["t2v", "i2v"])
def test_training_loss_falls_and_resume_mid_epoch_is_exact(
    example: ModuleType, shared: Path, tmp_path: Path, mode: str
) -> None:
    argv = ["--mode", mode, "--steps", "40", "--resume-at", "13", "--num-workers", "2"]
    argv += ["--threads", "1", "--log-every", "10"]
    argv += ["--data", str(shared / "data"), "--models", str(shared / "models")]
    result = example.main([*argv, "--work", str(tmp_path / "work")])

    conditions = {"cond_latents", "cond_mask", "clip_embeds"}
    keys = set(result["batch_keys"])
    assert {"latents", "text_embeds", "text_lens", "loss_weights"} <= keys
    assert (conditions <= keys) if mode == "i2v" else not (conditions & keys)
    losses = result["losses"]
    assert len(losses) == 40 and all(map(torch.isfinite, torch.tensor(losses)))
    # Fixed seed, so these are fixed numbers; the margins are several times what float noise
    # between platforms could move them (measured: t2v 31 % and 22 %, i2v 19 % and 11 %).
    assert result["eval_after"] < 0.9 * result["eval_before"]  # same batch, noise and sigmas
    assert result["last_mean"] < 0.95 * result["first_mean"]  # training loss, 5 steps each
    # Step 13 of 2-batch epochs is the middle of epoch 6: the resumed run starts at its batch 1.
    assert result["resume_mid_epoch"] and result["resumed_steps"] == 27
    assert result["resumed_batches_identical"]
    assert result["resumed_losses_equal"]


def test_the_script_runs_from_the_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = ["--mode", "i2v", "--steps", "6", "--resume-at", "3", "--threads", "1"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=240,
    )
    out = done.stdout
    assert done.returncode == 0, f"{out[-2000:]}\n{done.stderr[-4000:]}"
    assert "batch['cond_mask']: (2, 4, 2, 8, 8)" in out
    assert "batch['clip_embeds']: (2, 257, 8)" in out
    assert re.search(r"resuming at step 3: epoch 1, batch 1 of 2", out)
    assert "3 batch(es) after it, identical: True" in out, out
    assert "losses equal the uninterrupted run's: True" in out, out
    made = re.search(r"models in (\S+)/models", out)
    assert made is not None and not Path(made.group(1)).exists()  # the temporary folder went

"""The scale-out rehearsal on CPU: 4 processes (torchrun, gloo) pretrain with sharded asynchronous
checkpoints, one rank is SIGKILLed while the job trains, and the run resumes on 2 processes.

* The killed run's newest complete checkpoint (DCP shards of 4 ranks) resumes on 2 processes (DCP
  reshards on load) and ends bit-identical — every byte of ``final/model.safetensors`` and every
  logged loss — to an uninterrupted 2-process run resumed from a copy of that same checkpoint. The
  killed run's directory may hold a half-written checkpoint (the kill can land inside an
  asynchronous save); resuming removes it and never reads it.
* The first resumed steps match the 4-process run's own logged losses to 1e-5 relative, not bit for
  bit, and that is the one difference: the same weights, optimizer moments and data, but on 2 ranks
  each rank accumulates 2 micro batches and FSDP reduce-scatters over 2 ranks instead of 4, so the
  float32 gradient sums are added in another order (the same rounding ``test_distributed`` measures
  between 1 and 2 processes, ~1e-7). A wrong reshard (a chunk loaded into the wrong rows) would
  change the loss at the first step by far more.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_fixtures import ROOT, TINY_OVERRIDES, TINY_RECIPE, final_weights, free_port, make_shards

from qwen_cli.checkpoint import dcp
from qwen_cli.checkpoint import train_state as ts

pytestmark = pytest.mark.slow

STEPS, KILL_AFTER = 20, 9
SETTINGS = (*TINY_OVERRIDES, f"train.steps={STEPS}", "train.micro_batch_size=2", "train.batch_tokens=256",
            "checkpoint.every=4", "checkpoint.keep_last=3", "train.val_every=0", "logging.log_every=1")


def _launch(out: Path, shards: Path, nproc: int, *extra: str, resume: bool = False) -> subprocess.Popen:
    sets = [a for item in (*SETTINGS, f"data.shards={shards}", *extra) for a in ("--set", item)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port", str(free_port()),
           "-m", "qwen_cli.cli", "pretrain", str(TINY_RECIPE), *sets, "--out", str(out), *(["--resume"] * resume)]
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _finish(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    return err


def _losses(run_dir: Path) -> dict[int, float]:
    """step -> loss of every complete line of ``metrics.jsonl`` (the run may be writing the next one)."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().split("\n")[:-1] if path.exists() else []
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def _worker(launcher: int, rank: int) -> int:
    """The pid of torchrun's worker process with ``RANK=rank`` (a child of the launcher)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no worker with RANK={rank} under pid {launcher}")


def _kill_rank_while_training(proc: subprocess.Popen, run_dir: Path, rank: int) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and max(_losses(run_dir), default=0) < KILL_AFTER:
        time.sleep(0.01)
    os.kill(_worker(proc.pid, rank), signal.SIGKILL)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode != 0, "the job should fail when one of its ranks dies"


def test_four_ranks_killed_resume_on_two_bit_identically(tmp_path):
    shards = make_shards(tmp_path / "data")
    killed = tmp_path / "killed"
    _kill_rank_while_training(_launch(killed, shards, 4, "checkpoint.async_save=true"), killed, 3)
    logged = _losses(killed)
    assert max(logged) < STEPS and not (killed / "final").exists()
    checkpoint, skipped = ts.latest_valid_checkpoint(killed)
    assert checkpoint is not None and skipped == []
    step = int(checkpoint.name.removeprefix("step_"))
    assert dcp.is_sharded(checkpoint) and len(dcp.shard_files(checkpoint)) == 4
    assert json.loads((checkpoint / ts.STATE_FILE).read_text())["layout"] == "sharded"

    fresh = tmp_path / "fresh"  # the uninterrupted 2-process run from that same checkpoint
    shutil.copytree(checkpoint, ts.checkpoint_dir(fresh, step))
    _finish(_launch(fresh, shards, 2, resume=True))
    err = _finish(_launch(killed, shards, 2, "checkpoint.async_save=true", resume=True))
    assert f"resumed from {checkpoint} (step {step})" in err

    assert final_weights(killed) == final_weights(fresh)
    resumed, reference = _losses(killed), _losses(fresh)
    assert {s: resumed[s] for s in reference} == reference and max(reference) == STEPS
    for s in range(step + 1, max(logged) + 1):  # the same steps as the 4-process run, summed in another order
        assert reference[s] == pytest.approx(logged[s], rel=1e-5), s
    assert not list((killed / ts.CHECKPOINTS).glob(".step_*")), "a half-written checkpoint was left behind"
    assert dcp.is_sharded(ts.checkpoint_dir(killed, STEPS)) and len(dcp.shard_files(ts.checkpoint_dir(killed, STEPS))) == 2

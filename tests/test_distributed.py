"""FSDP2 under torchrun (2 CPU processes, gloo) matches one process on the same global batch.

Tolerance: per-step losses within 1e-5 relative and final weights within 1e-6 absolute. The
two runs see the same 8 sequences per step, but one process sums two micro batches of 4
while the two ranks each take 4 and FSDP reduce-scatters the gradients, so float32 sums
happen in a different order (measured difference ~1e-7). A checkpoint written by the two
processes then resumes in one, and loads through ``qwen_cli.load``; with dropout, a two-process resume is
bit-exact because each rank gets its own random streams back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_fixtures import ROOT, TINY_OVERRIDES, TINY_RECIPE, free_port, make_shards

import qwen_cli
from qwen_cli.checkpoint import train_state as ts

pytestmark = pytest.mark.slow


def _run(out: Path, shards: Path, nproc: int, *flags: str) -> list[dict]:
    sets = [a for item in (*TINY_OVERRIDES, f"data.shards={shards}", "train.steps=4", "logging.log_every=1",
                           "train.val_every=2", "train.val_batches=4") for a in ("--set", item)]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                "--master-port", str(free_port())] if nproc > 1 else [sys.executable]
    cmd = [*launcher, "-m", "qwen_cli.cli", "pretrain", str(TINY_RECIPE), *sets, "--out", str(out), *flags]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_process_fsdp_matches_single_process(tmp_path):
    shards = make_shards(tmp_path / "data")
    single = _run(tmp_path / "one", shards, 1)
    double = _run(tmp_path / "two", shards, 2)
    for a, b in zip(single, double, strict=True):
        assert a["step"] == b["step"]
        for key in ("loss", "val_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5), (key, a, b)
    w1, w2 = qwen_cli.load(tmp_path / "one" / "final")[0], qwen_cli.load(tmp_path / "two" / "final")[0]
    for (name, p1), p2 in zip(w1.state_dict().items(), w2.state_dict().values(), strict=True):
        torch.testing.assert_close(p1, p2, atol=1e-6, rtol=0, msg=name)

    # the 2-process checkpoint at step 2 continues in one process to the same result
    cont = tmp_path / "cont"
    (cont / ts.CHECKPOINTS).mkdir(parents=True)
    shutil.copytree(ts.checkpoint_dir(tmp_path / "two", 2), ts.checkpoint_dir(cont, 2))
    _run(cont, shards, 1, "--resume")
    w3 = qwen_cli.load(cont / "final")[0]
    for (name, p1), p3 in zip(w1.state_dict().items(), w3.state_dict().values(), strict=True):
        torch.testing.assert_close(p1, p3, atol=1e-6, rtol=0, msg=name)


def test_two_process_resume_gives_each_rank_its_own_random_streams(tmp_path):
    """With dropout the ranks draw different numbers (rank 1 is seeded with seed + 1 after the model is built).
    The step-2 checkpoint, resumed in two processes, must end bit-identical to the uninterrupted run: with
    rank 0's streams restored on both ranks (the old behaviour) rank 1's dropout masks change."""
    shards = make_shards(tmp_path / "data")
    dropout = ("--set", "model.dropout=0.1")
    _run(tmp_path / "ref", shards, 2, *dropout)
    saved = load_file(ts.checkpoint_dir(tmp_path / "ref", 2) / ts.RNG_FILE)
    assert not torch.equal(saved["rank_0/torch_cpu"], saved["rank_1/torch_cpu"])
    cont = tmp_path / "cont"
    (cont / ts.CHECKPOINTS).mkdir(parents=True)
    shutil.copytree(ts.checkpoint_dir(tmp_path / "ref", 2), ts.checkpoint_dir(cont, 2))
    _run(cont, shards, 2, *dropout, "--resume")
    assert (cont / "final" / "model.safetensors").read_bytes() == (tmp_path / "ref" / "final" / "model.safetensors").read_bytes()

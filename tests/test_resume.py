"""Exact resume, signals, kills during training and during a save, damaged checkpoints."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_fixtures import ROOT, TINY_OVERRIDES, TINY_RECIPE, final_weights, run_cli_until_killed, tiny_recipe

import qwen_cli
from qwen_cli.checkpoint import train_state as ts
from qwen_cli.errors import UserError
from qwen_cli.stages.pretrain import PretrainStage
from qwen_cli.train.trainer import run_stage

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory) -> Path:
    """An uninterrupted run of the tiny recipe."""
    out = tmp_path_factory.mktemp("ref") / "run"
    result = run_stage(PretrainStage, tiny_recipe(shards), out)
    assert result.exit_code == 0
    return out


class InterruptingStage(PretrainStage):
    """Sends itself SIGINT during the ``at``-th loss computation (mid-step)."""

    at = 7

    def __init__(self, recipe):
        super().__init__(recipe)
        self.calls = 0

    def loss(self, model, batch):
        self.calls += 1
        if self.calls == self.at:
            signal.raise_signal(signal.SIGINT)
        return super().loss(model, batch)


def test_sigint_saves_and_resume_is_bit_exact(shards, reference, tmp_path):
    out = tmp_path / "run"
    stopped = run_stage(InterruptingStage, tiny_recipe(shards), out)
    # the 7th micro batch belongs to step 4 (2 per step): the step finishes, then it stops
    assert (stopped.exit_code, stopped.step, stopped.final_dir) == (130, 4, None)
    assert [s for s, _ in ts.list_checkpoints(out)] == [2, 4]
    resumed = run_stage(PretrainStage, tiny_recipe(shards), out, resume=True)
    assert resumed.exit_code == 0 and resumed.step == 8
    assert final_weights(out) == final_weights(reference)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    ref_steps = [json.loads(line)["step"] for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert steps == ref_steps


def test_resume_is_bit_exact_with_dropout_and_a_measured_peak(shards, tmp_path):
    """Dropout draws from the RNG streams a resume restores; measuring the matmul peak must not move them."""
    extra = ("model.dropout=0.1", "train.peak_flops=0")
    reference = run_stage(PretrainStage, tiny_recipe(shards, *extra), tmp_path / "ref")
    out = tmp_path / "run"
    stopped = run_stage(InterruptingStage, tiny_recipe(shards, *extra), out)
    assert stopped.exit_code == 130
    resumed = run_stage(PretrainStage, tiny_recipe(shards, *extra), out, resume=True)
    assert resumed.exit_code == 0 and final_weights(out) == final_weights(reference.run_dir)


def test_resume_may_change_reporting_saving_and_validation(shards, reference, tmp_path):
    """Keys the trainer lets a resume change leave the trained weights bit-exact."""
    out = tmp_path / "run"
    assert run_stage(InterruptingStage, tiny_recipe(shards), out).exit_code == 130
    changed = ("logging.log_every=3", "checkpoint.every=3", "checkpoint.keep_last=1", "train.val_every=3",
               "train.val_batches=1", "train.peak_flops=2e9", "distributed.reshard_after_forward=false")
    resumed = run_stage(PretrainStage, tiny_recipe(shards, *changed), out, resume=True)
    assert resumed.exit_code == 0 and final_weights(out) == final_weights(reference)
    assert "val_batches = 1" in (out / "recipe.toml").read_text()


def _cli_args(out: Path, shards: Path, *extra: str) -> list[str]:
    sets = [arg for item in (*TINY_OVERRIDES, f"data.shards={shards}") for arg in ("--set", item)]
    return ["pretrain", str(TINY_RECIPE), *sets, "--out", str(out), *extra]


def _run_cli(out: Path, shards: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "qwen_cli.cli", *_cli_args(out, shards, *extra)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_between_checkpoints_then_resume_is_bit_exact(shards, reference, tmp_path):
    out = tmp_path / "run"
    # log every step, so the kill lands after step 5: checkpoint 4 exists, step 6's does not
    run_cli_until_killed(_cli_args(out, shards, "--set", "logging.log_every=1"), 5)
    assert [s for s, _ in ts.list_checkpoints(out)] == [2, 4] and not (out / "final").exists()
    resumed = _run_cli(out, shards, "--resume")
    _, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err
    assert "resumed from" in err
    assert final_weights(out) == final_weights(reference)


def test_sigterm_via_cli_exits_143_with_checkpoint(shards, tmp_path):
    out = tmp_path / "run"
    proc = _run_cli(out, shards, "--set", "train.steps=100000", "--set", "checkpoint.every=0")
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().strip()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "SIGTERM" in err
    (step, path), = ts.list_checkpoints(out)
    assert step >= 1 and json.loads((path / ts.STATE_FILE).read_text())["step"] == step


def _train_and_die_in_second_save(shards: Path, out: Path) -> None:
    """Child process: train; die abruptly (no cleanup) in the middle of the second checkpoint."""
    torch.set_num_threads(1)
    calls = {"n": 0}
    original = ts.write_train_state

    def dying(directory, state, optimizer_state):
        calls["n"] += 1
        original(directory, state, optimizer_state)
        if calls["n"] == 2:
            os._exit(9)

    ts.write_train_state = dying
    run_stage(PretrainStage, tiny_recipe(shards), out)


def test_kill_during_save_leaves_previous_checkpoint_loadable(shards, reference, tmp_path):
    out = tmp_path / "run"
    child = multiprocessing.get_context("fork").Process(target=_train_and_die_in_second_save, args=(shards, out))
    child.start()
    child.join(120)
    assert child.exitcode == 9
    assert [s for s, _ in ts.list_checkpoints(out)] == [2]
    assert list((out / ts.CHECKPOINTS).glob(".step_000004.tmp-*")), "the interrupted save left its temp dir"
    model, tokenizer = qwen_cli.load(ts.checkpoint_dir(out, 2))
    assert model.config.hidden_size == 32 and tokenizer.vocab_size == 464
    result = run_stage(PretrainStage, tiny_recipe(shards), out, resume=True)
    assert result.exit_code == 0
    assert not list((out / ts.CHECKPOINTS).glob(".step_*")), "leftovers are cleaned on resume"
    assert final_weights(out) == final_weights(reference)


def test_damaged_checkpoints(shards, reference, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    newest = ts.checkpoint_dir(out, 8)
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    with pytest.raises(UserError, match="checksum mismatch"):
        qwen_cli.load(newest)
    path, skipped = ts.latest_valid_checkpoint(out)
    assert path == ts.checkpoint_dir(out, 6) and "model.safetensors" in skipped[0]
    state = ts.checkpoint_dir(out, 6) / ts.OPTIMIZER_FILE
    data = bytearray(state.read_bytes())
    data[-1] ^= 0xFF  # altered
    state.write_bytes(bytes(data))
    path, skipped = ts.latest_valid_checkpoint(out)
    assert path == ts.checkpoint_dir(out, 4) and "optimizer.safetensors" in skipped[1]
    for _, p in ts.list_checkpoints(out):
        (p / "config.json").write_text("{}")
    with pytest.raises(UserError, match="no checkpoint could be verified"):
        run_stage(PretrainStage, tiny_recipe(shards), out, resume=True)

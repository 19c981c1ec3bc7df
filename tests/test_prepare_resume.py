"""A ``qwen tokenize prepare`` killed with SIGKILL resumes: finished tasks are not redone, same output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prepare_fixtures import output_docs, planted_corpus, recipe


def _command(path: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "qwen_cli.cli", "tokenize", "prepare", str(path), "--out", str(out)]


def _stats_times(work: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (work / "logs" / "filter" / "stats").glob("*.json")}


def test_sigkill_then_rerun_gives_the_uninterrupted_output(tmp_path):
    planted_corpus(tmp_path)
    path = recipe(tmp_path / "r.toml", tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_command(path, tmp_path / "whole"), check=True, env=env, capture_output=True)

    out, work = tmp_path / "killed", tmp_path / ".killed.prepare"
    proc = subprocess.Popen(_command(path, out), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(_stats_times(work)) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # 4 input tasks: kill once the first stage has finished them all
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the run finished before it could be killed"
    before = _stats_times(work)
    assert len(before) == 4

    rerun = subprocess.run(_command(path, out), env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumed"] and manifest["tasks_done_before"] >= len(before)  # datatrove skipped them
    assert output_docs(out) == output_docs(tmp_path / "whole")
    whole = sorted(p.relative_to(tmp_path / "whole") for p in (tmp_path / "whole" / "data").rglob("*.jsonl"))
    assert whole == sorted(p.relative_to(out) for p in (out / "data").rglob("*.jsonl"))
    assert not work.exists()


def test_a_process_pool_gives_the_single_process_output(tmp_path, run_qwen):
    planted_corpus(tmp_path)
    path = recipe(tmp_path / "r.toml", tmp_path)
    for workers in (1, 2):
        code, _, err = run_qwen("tokenize", "prepare", path, "--out", tmp_path / f"w{workers}", "--workers", workers)
        assert code == 0, err
    assert output_docs(tmp_path / "w2") == output_docs(tmp_path / "w1")


def test_a_leftover_run_with_other_settings_is_refused(tmp_path, run_qwen):
    planted_corpus(tmp_path)
    work = tmp_path / ".out.prepare"
    work.mkdir()
    (work / "settings.json").write_text('{"recipe": {}}')
    code, _, err = run_qwen("tokenize", "prepare", recipe(tmp_path / "r.toml", tmp_path), "--out", tmp_path / "out")
    assert code == 2 and "other settings" in err


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ray_executor_gives_the_local_output(tmp_path):
    """The same recipe on Ray (a local Ray instance) by changing executor.kind only."""
    pytest.importorskip("ray")
    planted_corpus(tmp_path)
    path = recipe(tmp_path / "r.toml", tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_command(path, tmp_path / "local"), check=True, env=env, capture_output=True)
    ray = subprocess.run([*_command(path, tmp_path / "ray"), "--set", "executor.kind=ray"], env=env,
                         capture_output=True, text=True)
    assert ray.returncode == 0, ray.stderr
    assert output_docs(tmp_path / "ray") == output_docs(tmp_path / "local")


FAKE_SBATCH = """#!/bin/bash
# Runs each array task of the submitted script at once, in order (dependencies are then met).
offset=0
for arg in "$@"; do case $arg in --export=*RUN_OFFSET=*) offset=${arg##*RUN_OFFSET=};; esac; done
script="${@: -1}"
last=$(sed -n 's/^#SBATCH --array=0-\\([0-9]*\\).*/\\1/p' "$script")
for i in $(seq 0 "${last:-0}"); do
  SLURM_ARRAY_TASK_ID=$i SLURM_NODELIST=localhost SLURM_NODEID=0 RUN_OFFSET=$offset bash "$script" > /dev/null 2>&1 || exit 1
done
echo "Submitted batch job $RANDOM"
"""
FAKE_SCONTROL = """#!/bin/bash
echo localhost
"""
FAKE_SRUN = """#!/bin/bash
while [[ $1 == -* ]]; do [[ $1 == -n ]] && shift; shift; done
exec "$@"
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_slurm_executor_submits_a_chain_and_a_rerun_assembles_it(tmp_path):
    """Slurm by changing executor.kind: sbatch/srun/scontrol stand-ins run the array tasks on this machine."""
    planted_corpus(tmp_path)
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    path = recipe(tmp_path / "r.toml", tmp_path, minhash="bands = 2\nrows = 4", executor="tasks = 2")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{fake}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(_command(path, tmp_path / "local"), check=True, env=env, capture_output=True)
    slurm = [*_command(path, tmp_path / "slurm"), "--set", "executor.kind=slurm"]
    submitted = subprocess.run(slurm, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert submitted.returncode == 0 and "submitted the Slurm jobs" in submitted.stderr, submitted.stderr
    assert not (tmp_path / "slurm").exists()
    assembled = subprocess.run(slurm, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert assembled.returncode == 0, assembled.stderr
    assert output_docs(tmp_path / "slurm") == output_docs(tmp_path / "local")

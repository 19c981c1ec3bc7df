"""Guards around a run directory: another run is never trained over, a resume must keep the recipe,
leftovers of a killed final save are cleaned, a finished run is not redone, a diverging run stops."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from train_fixtures import TINY_OVERRIDES, TINY_RECIPE, tiny_recipe

from qwen_cli.checkpoint import train_state as ts
from qwen_cli.errors import UserError
from qwen_cli.stages.pretrain import PretrainStage
from qwen_cli.stages.sft import SFTStage
from qwen_cli.train import checkpointing
from qwen_cli.train.progress import MetricsWriter
from qwen_cli.train.trainer import run_stage

pytestmark = pytest.mark.usefixtures("one_thread")
SFT_RECIPE = TINY_RECIPE.parent / "sft.toml"


def pretrain(run_qwen, shards: Path, out: Path, *args: str) -> tuple[int, str, str]:
    """``qwen pretrain`` of the tiny recipe in-process (later ``--set`` win over the tiny ones)."""
    sets = [arg for item in (*TINY_OVERRIDES, f"data.shards={shards}") for arg in ("--set", item)]
    return run_qwen("pretrain", TINY_RECIPE, *sets, "--out", out, *args)


def strict_records(path: Path) -> list[dict]:
    """metrics.jsonl read as strict JSON (NaN / Infinity are errors)."""
    def refuse(token: str):
        raise ValueError(f"{path}: non-JSON number {token}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def tree(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and directory (None) under ``root``, hidden ones included."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("tok_per_s", "mfu", "mfu_over_peak", "step_time")} for r in records]


@pytest.fixture()
def no_stage_built(monkeypatch):
    """Fail the test if a stage is constructed (the run directory is checked before)."""
    def built(self, recipe):
        raise AssertionError("the stage was built before the run directory was checked")

    for stage in (PretrainStage, SFTStage):
        monkeypatch.setattr(stage, "__init__", built)


@pytest.fixture(scope="module")
def finished(shards, tmp_path_factory) -> Path:
    """A finished two-step run (checkpoint step 2 and final/)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert run_stage(PretrainStage, tiny_recipe(shards, "train.steps=2"), out).exit_code == 0
    return out


# ----- a directory holding another run ---------------------------------------------------------
@pytest.mark.parametrize("entry", checkpointing.RUN_FILES)
def test_pretrain_refuses_a_directory_holding_a_run(run_qwen, shards, tmp_path, no_stage_built, entry):
    out = tmp_path / "run"
    out.mkdir()
    if entry in (ts.CHECKPOINTS, checkpointing.FINAL):
        (out / entry).mkdir()
    else:
        (out / entry).write_text("old\n")
    before = tree(out)
    code, _, err = pretrain(run_qwen, shards, out)
    assert code == 2
    assert err.count("\n") == 1 and str(out) in err and "--resume" in err and "--overwrite" in err
    assert tree(out) == before


def test_sft_refuses_a_directory_holding_a_run(run_qwen, tmp_path, no_stage_built):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    code, _, err = run_qwen("sft", SFT_RECIPE, "--out", out)
    assert code == 2 and err.count("\n") == 1
    assert str(out) in err and "--resume" in err and "--overwrite" in err


def test_resume_and_overwrite_exclude_each_other(run_qwen, shards, tmp_path, no_stage_built):
    code, _, err = pretrain(run_qwen, shards, tmp_path / "run", "--resume", "--overwrite")
    assert code == 2 and "exclude each other" in err


def test_overwrite_replaces_the_old_run_and_nothing_else(run_qwen, shards, tmp_path):
    out = tmp_path / "run"
    old_step = ts.checkpoint_dir(out, 10)  # a longer old run: keep_last used to keep it, --resume to pick it
    old_step.mkdir(parents=True)
    (out / "final").mkdir()
    (out / "final" / "old").write_text("old")
    (out / "metrics.jsonl").write_text('{"step": 10, "loss": 1.0}\n')
    (out / "recipe.toml").write_text("# old\n")
    (out / "notes.txt").write_text("mine")
    code, _, err = pretrain(run_qwen, shards, out, "--set", "train.steps=2", "--overwrite")
    assert code == 0, err
    assert [s for s, _ in ts.list_checkpoints(out)] == [2]
    assert (out / "final" / "model.safetensors").is_file() and not (out / "final" / "old").exists()
    assert [r["step"] for r in strict_records(out / "metrics.jsonl")] == [2, 2]  # the last step, final validation
    assert "old" not in (out / "recipe.toml").read_text() and (out / "notes.txt").read_text() == "mine"


# ----- a resume must keep the recipe -------------------------------------------------------------
@pytest.mark.parametrize(("override", "message"), [
    ("model.hidden_size=64", "model.hidden_size = 64: the run was trained with 32"),
    ("data.seq_len=16", "data.seq_len = 16: the run was trained with 32"),
    ("train.micro_batch_size=8", "train.micro_batch_size = 8: the run was trained with 4"),
    ("model.dropout=0.1", "model.dropout = 0.1: the run was trained with 0.0"),
    ("train.steps=4", "train.steps = 4: the run was trained with 2"),
])
def test_resume_refuses_a_changed_recipe(shards, finished, override, message):
    before = tree(finished)
    with pytest.raises(UserError, match=re.escape(message)) as refused:
        run_stage(PretrainStage, tiny_recipe(shards, "train.steps=2", override), finished, resume=True)
    assert refused.value.exit_code == 2 and "\n" not in str(refused.value)
    assert str(finished / "checkpoints") in str(refused.value) and "recipe.toml" in str(refused.value)
    assert tree(finished) == before


def test_resume_with_a_changed_recipe_exits_2_naming_the_key(run_qwen, shards, finished):
    code, _, err = pretrain(run_qwen, shards, finished, "--set", "train.steps=2", "--set", "optim.lr=1e-3",
                            "--resume")
    assert code == 2 and "optim.lr = 0.001: the run was trained with 0.003" in err


# ----- saves killed midway, finished runs -------------------------------------------------------
def test_resuming_a_finished_run_changes_nothing(run_qwen, shards, finished):
    before = tree(finished)
    code, _, err = pretrain(run_qwen, shards, finished, "--set", "train.steps=2", "--set", "logging.log_every=5",
                            "--resume")
    assert code == 0, err
    assert "already finished at step 2" in err
    assert tree(finished) == before


def _train_and_die_in_final_save(shards: Path, out: Path) -> None:
    """Child process: train two steps; die abruptly once ``final/``'s files are written, before its rename."""
    torch.set_num_threads(1)
    atomic_dir = checkpointing.atomic_dir

    @contextlib.contextmanager
    def dying(target):
        with atomic_dir(target) as tmp:
            yield tmp
            if Path(target).name == checkpointing.FINAL:
                os._exit(9)

    checkpointing.atomic_dir = dying
    run_stage(PretrainStage, tiny_recipe(shards, "train.steps=2"), out)


def test_kill_during_final_save_then_resume_cleans_up_and_logs_once(shards, finished, tmp_path):
    out = tmp_path / "run"
    child = multiprocessing.get_context("fork").Process(target=_train_and_die_in_final_save, args=(shards, out))
    child.start()
    child.join(120)
    assert child.exitcode == 9
    assert not (out / "final").exists() and list(out.glob(".final.tmp-*"))
    result = run_stage(PretrainStage, tiny_recipe(shards, "train.steps=2"), out, resume=True)
    assert result.exit_code == 0
    assert not list(out.glob(".final.*")), "the killed save's temp dir is removed"
    logged, reference = (without_timing(strict_records(run / "metrics.jsonl")) for run in (out, finished))
    assert logged == reference, "one final validation line, as in an uninterrupted run"
    assert (out / "final" / "model.safetensors").read_bytes() == (finished / "final" / "model.safetensors").read_bytes()


def test_leftovers_of_writes_killed_midway_are_removed_at_start(shards, finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    for path in (out / ".final.tmp-abc", out / ".final.old-abc" / "final", out / ts.CHECKPOINTS / ".step_000004.tmp-x"):
        path.mkdir(parents=True)
    (out / ".metrics.jsonl.tmp-abc").write_text("{")
    (out / ".recipe.toml.tmp-abc").write_text("#")
    assert run_stage(PretrainStage, tiny_recipe(shards, "train.steps=2"), out, resume=True).exit_code == 0
    assert tree(out) == tree(finished)


# ----- a diverging run ----------------------------------------------------------------------------
def test_a_diverging_run_stops_with_exit_1_keeping_the_last_good_checkpoint(run_qwen, shards, tmp_path):
    out = tmp_path / "run"
    code, _, err = pretrain(run_qwen, shards, out, "--set", "optim.lr=1e6", "--set", "checkpoint.every=1",
                            "--set", "logging.log_every=1")
    assert code == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err
    diverged = int(re.search(r"training diverged at step (\d+) \(loss \S+, grad_norm \S+\)", errors[0]).group(1))
    assert diverged > 1
    good = list(range(1, diverged))
    assert [s for s, _ in ts.list_checkpoints(out)] == good and not (out / "final").exists()
    assert str(ts.checkpoint_dir(out, good[-1])) in errors[0]
    assert [r["step"] for r in strict_records(out / "metrics.jsonl")] == good


def test_metrics_are_strict_json(tmp_path):
    writer = MetricsWriter(tmp_path / "metrics.jsonl")
    writer.write({"step": 1, "loss": float("nan"), "grad_norm": float("inf"), "lr": 1e-3})
    writer.close()
    assert strict_records(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": None, "grad_norm": None, "lr": 1e-3}]

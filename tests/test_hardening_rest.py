"""Issue 10, the rest: per-rank RNG in checkpoints, SFT validation counted globally, no host syncs in the
training step, the final model written and hashed once, load_model holding the weights once, a full
disk while logging metrics, no stray blank line from ``qwen tokenize``, range checks of stage sections."""

from __future__ import annotations

import errno
import io
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from train_fixtures import ROOT, TINY_OVERRIDES, TINY_RECIPE, tiny_recipe

from qwen_cli.checkpoint import files, save_model
from qwen_cli.checkpoint import train_state as ts
from qwen_cli.data.shards import BatchLayout
from qwen_cli.errors import UserError
from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.recipe import load_recipe
from qwen_cli.stages import pretrain, sft
from qwen_cli.stages.pretrain import PretrainStage
from qwen_cli.tokenizer import Tokenizer
from qwen_cli.train import progress
from qwen_cli.train.trainer import Trainer, run_stage

SFT_RECIPE = TINY_RECIPE.parent / "sft.toml"
FULL = os.strerror(errno.ENOSPC)


def byte_tokenizer() -> Tokenizer:
    return Tokenizer({bytes([i]): i for i in range(256)}, name="bytes")


def draw() -> tuple:
    """One number from each global stream a checkpoint restores."""
    return torch.rand(1).item(), random.random(), float(np.random.rand())


# ----- 1. every rank's random streams ------------------------------------------------------------
def test_each_rank_gets_its_own_random_streams_back(tmp_path):
    """A checkpoint holds one set of streams per rank; rank r resumes with rank r's, not rank 0's."""
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    rank0 = ts.capture_rng()
    expected0 = draw()
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    rank1 = ts.capture_rng()
    expected1 = draw()
    state = ts.TrainState(3, 8, 100, {"sequences": 0, "seed": 0}, [rank0, rank1])
    ts.write_train_state(tmp_path, state, {"state": {}, "param_groups": []})
    _, _, payload = ts.read_train_state(tmp_path)
    assert ts.restore_rng(tmp_path, payload, rank=1) and draw() == expected1
    assert ts.restore_rng(tmp_path, payload, rank=0) and draw() == expected0
    before = ts.capture_rng()
    assert not ts.restore_rng(tmp_path, payload, rank=2)  # written by two processes: rank 2 keeps its own
    assert torch.equal(torch.get_rng_state(), before.tensors["torch_cpu"])


# ----- 2. SFT val_batches is a global count --------------------------------------------------------
def test_sft_val_batches_is_the_same_global_set_for_any_world_size(tmp_path):
    config = ModelConfig(vocab_size=512, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                         max_position_embeddings=256)
    base = save_model(tmp_path / "base", QwenModel(config), byte_tokenizer())
    recipe = load_recipe(SFT_RECIPE, (f"init.checkpoint={base}", "data.val_fraction=0.1",
                                      "train.micro_batch_size=2", "train.val_batches=6"), sections=sft.SECTIONS)
    stage = sft.SFTStage(recipe)

    def held_out(world: int) -> list[tuple]:
        batches = [b for rank in range(world) for b in stage.val_batches(BatchLayout(rank, world, 2, 1))]
        return sorted(tuple(b["input_ids"].flatten().tolist()) for b in batches)

    one = held_out(1)
    assert len(one) == 6  # train.val_batches micro batches, all ranks together
    assert held_out(2) == held_out(3) == one
    assert len(held_out(4)) == 4  # rounded down to a multiple of the world size, as for pretraining


# ----- 3. no host sync in a training step ----------------------------------------------------------
SYNCS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist")
OWN = (ROOT / "qwen_cli" / "train", ROOT / "qwen_cli" / "stages")


class SyncCounter(TorchFunctionMode):
    """Records (step, file) for every tensor -> host conversion made by code in ``OWN``."""

    def __init__(self) -> None:
        super().__init__()
        self.step, self.seen = 0, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in SYNCS:
            frame = sys._getframe(1)
            while frame is not None and not frame.f_code.co_filename.startswith(str(ROOT)):
                frame = frame.f_back
            if frame is not None and any(Path(frame.f_code.co_filename).is_relative_to(d) for d in OWN):
                self.seen.append((self.step, Path(frame.f_code.co_filename).name))
        return func(*args, **(kwargs or {}))


def test_the_step_never_waits_for_the_device_between_logged_steps(shards, tmp_path, monkeypatch, one_thread):
    counter = SyncCounter()
    step = Trainer._train_step

    def counted(self, index):
        counter.step = index + 1  # syncs from here on belong to this step (until the next one starts)
        return step(self, index)

    monkeypatch.setattr(Trainer, "_train_step", counted)
    recipe = tiny_recipe(shards, "train.steps=8", "logging.log_every=4", "checkpoint.every=0", "train.val_every=0")
    with counter:
        result = run_stage(PretrainStage, recipe, tmp_path / "run")
    assert result.exit_code == 0
    assert counter.seen and {step for step, _ in counter.seen} <= {4, 8}, counter.seen
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [4, 8, 8] and logged[1]["tokens_seen"] == 8 * 256


def test_a_divergence_found_at_a_later_read_names_the_step_it_happened(run_qwen, shards, tmp_path, one_thread):
    sets = [arg for item in (*TINY_OVERRIDES, f"data.shards={shards}", "optim.lr=1e6") for arg in ("--set", item)]

    def diverge(out: Path, *more: str) -> tuple[int, str]:
        code, _, err = run_qwen("pretrain", TINY_RECIPE, *sets, *more, "--out", out)
        assert code == 1 and "Traceback" not in err, err
        return int(re.search(r"training diverged at step (\d+)", err).group(1)), err

    every_step, _ = diverge(tmp_path / "a", "--set", "logging.log_every=1", "--set", "checkpoint.every=1")
    later, err = diverge(tmp_path / "b", "--set", "logging.log_every=5", "--set", "checkpoint.every=3")
    assert later == every_step  # read only at steps 3, 4 (validation), 5, 6, 8, yet the step that diverged is named
    assert [s for s, _ in ts.list_checkpoints(tmp_path / "b")] == [s for s in (3, 6) if s < later]
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [s for s in (4, 5) if s < later]


# ----- 4. the final model is written and hashed once; load_model holds the weights once -------------
def test_the_final_save_writes_and_hashes_the_model_once(shards, tmp_path, monkeypatch, one_thread):
    writes, hashed = [], []
    sha256 = files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda path, *a: hashed.append(Path(path).name) or sha256(path, *a))

    class Counting(PretrainStage):
        def write_model(self, directory, *args):
            writes.append(directory)
            super().write_model(directory, *args)

    out = tmp_path / "run"
    run_stage(Counting, tiny_recipe(shards, "train.steps=2", "checkpoint.every=0"), out)
    assert len(writes) == 1 and hashed.count(files.WEIGHTS_FILE) == 1
    files.verify_checksums(out / "final")  # the reused checksums hold
    final, checkpoint = out / "final", ts.checkpoint_dir(out, 2)
    assert sorted(p.name for p in final.iterdir()) == sorted(
        p.name for p in checkpoint.iterdir() if p.name not in ts.STATE_FILES)
    assert (final / files.WEIGHTS_FILE).read_bytes() == (checkpoint / files.WEIGHTS_FILE).read_bytes()


PEAK = """
import sys, torch
from qwen_cli.checkpoint import load_model, model_dir
from qwen_cli.model import QwenModel
with torch.device("meta"):
    QwenModel(model_dir.read_config(model_dir.Path(sys.argv[1])))  # one-time set-up of building a model (~70 MB)
def kib(key):  # VmHWM, not ru_maxrss: that counts the forking parent's size too
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))
before = kib("VmRSS")
model = load_model(sys.argv[1], verify=False)
weights = sum(p.numel() * p.element_size() for p in model.parameters() if p.sum() is not None)  # every page read
print((kib("VmHWM") - before) * 1024 / weights)
"""


def test_load_model_holds_the_weights_about_once(tmp_path):
    """Peak resident memory of loading a model and reading all its weights, over the weights' size: 1.64
    when the file's tensors stayed resident beside the concatenated q/k/v and gate/up (88 MB model),
    1.05-1.08 now that each is read only while it is converted."""
    config = ModelConfig(vocab_size=4096, hidden_size=384, num_layers=8, num_heads=6, intermediate_size=1536,
                         max_position_embeddings=64)
    with torch.no_grad():
        model = QwenModel(config)
    save_model(tmp_path / "model", model)  # 88 MB of fp32 weights
    proc = subprocess.run([sys.executable, "-c", PEAK, str(tmp_path / "model")], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) < 1.3, proc.stdout


# ----- 5. a full disk while writing metrics.jsonl ------------------------------------------------
class FillsUp(io.FileIO):
    """A file on a disk that fills up after ``room`` more bytes: partial writes, then ENOSPC."""

    room = 700

    def write(self, data) -> int:
        if FillsUp.room <= 0:
            raise OSError(errno.ENOSPC, FULL)
        n = min(len(data), FillsUp.room)
        FillsUp.room -= n
        return super().write(bytes(data)[:n])


def test_a_full_disk_while_logging_metrics_is_one_line(run_qwen, shards, tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr(FillsUp, "room", 700)
    monkeypatch.setattr(progress, "open", lambda path, mode: io.BufferedWriter(FillsUp(path, "a")), raising=False)
    out = tmp_path / "run"
    sets = [arg for item in (*TINY_OVERRIDES, f"data.shards={shards}", "logging.log_every=1") for arg in ("--set", item)]
    code, _, err = run_qwen("pretrain", TINY_RECIPE, *sets, "--out", out)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"error: {out / 'metrics.jsonl'}: cannot write ({FULL})"
    text = (out / "metrics.jsonl").read_text()
    assert text.endswith("\n") and [json.loads(line)["step"] for line in text.splitlines()] == [1, 2]


# ----- 6. qwen tokenize prints nothing stray when stderr is not a terminal ----------------------------
def test_tokenize_prints_no_blank_line_before_an_error(run_qwen, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 50)
    code, out, err = run_qwen("tokenize", "train", "--corpus", corpus, "--vocab-size", "300", "--out", tmp_path / "t")
    assert (code, out) == (2, "") and err == "error: --vocab-size must be at least 465 with --base none " \
                                             "(208 of it are special tokens)\n"
    code, out, err = run_qwen("tokenize", "encode", "--input", tmp_path / "missing", "--out", tmp_path / "s")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    code, out, err = run_qwen("tokenize", "train", "--corpus", corpus, "--vocab-size", "480", "--out", tmp_path / "t")
    assert (code, err) == (0, "") and out.startswith(f"wrote {tmp_path / 't'}: ") and out.count("\n") == 1


def test_the_tokenize_bar_still_shows_on_a_terminal():
    from rich.console import Console

    from qwen_cli.commands.tokenize import RichProgress

    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with RichProgress(console) as bar:
        bar.start("reading", 10, "docs")
        bar.advance(10)
    assert "reading" in console.file.getvalue()


# ----- 7. ranges of the stage-specific recipe sections --------------------------------------------
@pytest.mark.parametrize(("sections", "recipe", "override", "message"), [
    (sft.SECTIONS, SFT_RECIPE, "data.seq_len=0", "'data.seq_len' must be >= 1, got 0"),
    (sft.SECTIONS, SFT_RECIPE, "data.val_fraction=1", "'data.val_fraction' must be in [0, 1), got 1.0"),
    (sft.SECTIONS, SFT_RECIPE, "data.val_fraction=-0.1", "'data.val_fraction' must be in [0, 1), got -0.1"),
    (sft.SECTIONS, SFT_RECIPE, "lora.rank=-1", "'lora.rank' must be >= 0, got -1"),
    (sft.SECTIONS, SFT_RECIPE, "lora.alpha=0", "'lora.alpha' must be > 0, got 0.0"),
    (sft.SECTIONS, SFT_RECIPE, "lora.dropout=1", "'lora.dropout' must be in [0, 1), got 1.0"),
    (sft.SECTIONS, SFT_RECIPE, "lora.dropout=nan", "'lora.dropout' must be finite and in [0, 1), got nan"),
    (sft.SECTIONS, SFT_RECIPE, "sample.max_new_tokens=-1", "'sample.max_new_tokens' must be >= 0, got -1"),
    (pretrain.SECTIONS, TINY_RECIPE, "sample.max_new_tokens=-5", "'sample.max_new_tokens' must be >= 0, got -5"),
    (pretrain.SECTIONS, TINY_RECIPE, "sample.temperature=-1", "'sample.temperature' must be >= 0, got -1.0"),
    (pretrain.SECTIONS, TINY_RECIPE, "sample.top_p=0", "'sample.top_p' must be in (0, 1], got 0.0"),
    (pretrain.SECTIONS, TINY_RECIPE, "sample.top_p=1.5", "'sample.top_p' must be in (0, 1], got 1.5"),
])
def test_stage_sections_refuse_values_out_of_range(sections, recipe, override, message):
    with pytest.raises(UserError) as error:
        load_recipe(recipe, (override,), sections=sections)
    assert str(error.value) == f"--set {override}: {message}"


def test_a_range_error_in_the_file_names_the_file(tmp_path):
    path = tmp_path / "sft.toml"
    path.write_text(SFT_RECIPE.read_text() + "\n[lora]\nrank = 8\nalpha = -16\n")
    with pytest.raises(UserError) as error:
        load_recipe(path, sections=sft.SECTIONS)
    assert str(error.value) == f"{path}: 'lora.alpha' must be > 0, got -16.0"

"""Small fixes: literal names in the stats table, plural skip counts, MFU never above 100% as fact,
piped chat replies that can be split back."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import torch
from rich.console import Console
from train_fixtures import tiny_recipe

from qwen_cli.corpus import SKIP_REASONS, ReadStats, describe_skipped, iter_documents


def test_stats_table_prints_names_literally() -> None:
    from qwen_cli.tokenizer.stats import render_table

    row = {"bytes": 10, "tokens": 5, "bytes_per_token": 2.0, "tokens_per_char": 0.5, "tokens_vs_first": 1.0}
    result = {"tokenizers": ["tok/[bold]t"], "corpora": ["data/[red]z"],
              "rows": [{"corpus": "data/[red]z", "tokenizer": "tok/[bold]t", **row}]}
    console = Console(record=True, width=200, file=io.StringIO())
    render_table(result, console)
    text = console.export_text()
    assert "[red]z" in text and "vs [bold]t" in text


def test_skip_counts_are_plural_when_not_one(tmp_path: Path) -> None:
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / "c.jsonl").write_text('{"text": "x"}\nnot json\n')
    stats = ReadStats()
    list(iter_documents([str(tmp_path)], stats, on_error="skip"))
    assert describe_skipped(stats.skipped) == "2 empty files, 1 malformed JSON line"
    assert set(SKIP_REASONS) == {"empty_file", "empty_document", "invalid_utf8", "malformed_json", "missing_field"}


def test_peak_is_the_best_of_trials_spread_over_a_second(monkeypatch) -> None:
    """A machine busy for the first half second (matmuls 25x slower) still gives about the quiet peak."""
    from qwen_cli.train import mfu

    start = time.perf_counter()

    def linear(a, b):
        time.sleep(0.05 if time.perf_counter() - start < 0.5 else 0.002)

    monkeypatch.setattr(torch.nn.functional, "linear", linear)
    quiet = 2 * 1024**3 / 0.002
    assert mfu.measure_peak_flops(torch.device("cpu"), torch.float32) > quiet / 5  # busy: quiet / 25


def test_mfu_over_100_percent_is_flagged_and_never_shown(shards: Path, tmp_path: Path, one_thread) -> None:
    """A ``train.peak_flops`` of 1 MFLOP/s stands for a peak measured far too low."""
    from qwen_cli.stages.pretrain import PretrainStage
    from qwen_cli.train.trainer import run_stage

    console = Console(file=io.StringIO(), width=300)  # not a terminal: one plain line per logged step
    recipe = tiny_recipe(shards, "train.steps=3", "checkpoint.every=0", "logging.log_every=1",
                         "logging.progress=auto", "train.peak_flops=1e6")
    run_stage(PretrainStage, recipe, tmp_path / "run", console=console)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    assert len(train) == 3 and all(r["mfu"] > 1 and r["mfu_over_peak"] is True for r in train)
    printed = console.file.getvalue()
    assert printed.count("mfu >100% (peak under-measured: 0.001 GFLOP/s per device)") == 1
    assert "loss" in printed and "mfu " not in printed.replace("mfu >100%", "")


def test_mfu_within_the_peak_is_recorded_plainly() -> None:
    from qwen_cli.train.mfu import Utilisation

    said: list[str] = []
    mfu = Utilisation(flops_per_token=1e6, peak=1e12, devices=2, say=said.append)
    record = {"loss": 2.0, **mfu.fields(tok_per_s=1e6)}
    assert record == {"loss": 2.0, "mfu": 0.5} and mfu.shown(record) is record and said == []


def test_piped_chat_replies_can_be_split_back(capsys) -> None:
    from qwen_cli.inference.chat_session import REPLY_SEPARATOR, Reply, run_loop

    class Session:
        def reply(self, user, on_text):
            text = f"{user}: first line\n\nsecond paragraph"
            on_text(text)
            return Reply(text, 5, "stop")

    console = Console(file=io.StringIO())
    run_loop(Session(), iter(["a", "/frob", "b", "c"]), console, json_lines=False, interactive=False)
    replies = capsys.readouterr().out.split(f"{REPLY_SEPARATOR}\n")
    assert replies == [f"{u}: first line\n\nsecond paragraph\n" for u in "abc"]
    run_loop(Session(), iter(["a"]), console, json_lines=False, interactive=False)
    assert capsys.readouterr().out == "a: first line\n\nsecond paragraph\n", "one reply is just its text"

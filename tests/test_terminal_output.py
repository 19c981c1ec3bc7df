"""Output at 80- and 120-column terminals and in a pipe: piped records stay on one line with full
paths and names, tables cut nothing, lm-eval's tqdm bars stay out of `qwen eval`, `--help` lists
every task without type tags, and `qwen rlhf score --pairs` takes several files."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from eval_fixtures import tiny_qwen_checkpoint
from rich.console import Console
from rich.table import Table

from qwen_cli.evaluation.agent.runner import AGENT_TASKS
from qwen_cli.evaluation.harness.registry import SPLITS
from qwen_cli.terminal import print_table

LONG = "a_directory_name_long_enough_that_an_80_column_pipe_would_have_wrapped_it"

NAMES = ("arc_challenge", "hellaswag", "winogrande")
EVAL_FIXTURES = Path(__file__).parent / "fixtures" / "eval"
TYPE_TAG = re.compile(r"<(bool|str|int|float|path|list\[[^\]]*\]|int range|float range)>")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_qwen_checkpoint(tmp_path_factory.mktemp(LONG))[2]


def _table() -> Table:
    table = Table(title="a title longer than eighty columns, which a pipe must not fold onto a second line at all")
    for column in ("task", "file", "score"):
        table.add_column(column)
    for name in NAMES:
        table.add_row(name, f"/data/{LONG}/{name}_excerpt.txt", "25.0")
    return table


@pytest.mark.timeout(30)
def test_a_piped_table_keeps_every_name_and_path_whole():
    console = Console(file=io.StringIO(), width=80)  # not a terminal
    print_table(console, _table())
    lines = console.file.getvalue().splitlines()
    assert lines[0] == _table().title
    for name in NAMES:
        assert sum(f"/data/{LONG}/{name}_excerpt.txt" in line and name in line for line in lines) == 1


@pytest.mark.timeout(30)
@pytest.mark.parametrize("width", [80, 120])
def test_a_terminal_table_stays_within_its_width(width):
    console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    print_table(console, _table())
    lines = console.file.getvalue().splitlines()
    assert lines and all(len(line) <= width for line in lines)
    assert all(name in console.file.getvalue() for name in ("arc_chal", "hellaswag"))


@pytest.mark.timeout(60)
def test_convert_prints_its_destination_on_one_line_when_piped(tiny, tmp_path, run_qwen):
    dst = tmp_path / LONG / "converted"
    code, out, _ = run_qwen("convert", tiny, dst)
    assert code == 0
    (line,) = [line for line in out.splitlines() if "written to" in line]
    assert line.endswith(f"written to {dst}")


@pytest.mark.timeout(120)
def test_qwen_eval_piped_has_whole_names_and_no_tqdm_bars(tiny, run_qwen, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    code, out, err = run_qwen("eval", tiny, "--tasks", "mmlu,gsm8k", "--limit", "1", "--data-dir", EVAL_FIXTURES,
                              "--max-gen-toks", "2", "--batch-size", "2")
    assert code == 0
    assert "see evaluation/harness/reference_scores.json)" in out.splitlines()[0]  # the title on one line
    assert any("gsm8k" in line and "exact_match" in line for line in out.splitlines())
    assert "it/s" not in err and "%|" not in err  # lm-eval's tqdm bars


@pytest.mark.timeout(60)
@pytest.mark.parametrize("width", ["80", "120", None])
def test_help_lists_every_task_and_no_type_tags(run_qwen, monkeypatch, width):
    if width is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", width)
    code, out, _ = run_qwen("eval", "--help")
    assert code == 0
    words = set(re.findall(r"[\w-]+", out))
    assert set(SPLITS) | set(AGENT_TASKS) <= words
    for command in (["eval"], ["pretrain"], ["rlhf", "score"], ["tokenize", "encode"], []):
        code, out, _ = run_qwen(*command, "--help")
        options = out.split("Options")[1]
        assert code == 0 and "--help" in options and not TYPE_TAG.search(options), (command, out)


def _pairs(path, n: int) -> None:
    path.write_text("".join(json.dumps({"prompt": f"What is {i} + {i}?", "chosen": str(2 * i),
                                        "rejected": str(2 * i + 1)}) + "\n" for i in range(n)))


@pytest.mark.timeout(120)
def test_rlhf_score_pairs_takes_several_files(tiny, tmp_path, run_qwen):
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    _pairs(first, 2)
    _pairs(second, 3)
    code, out, err = run_qwen("rlhf", "score", tiny, "--pairs", first, second, "--seq-len", "64", "--json")
    assert code == 0, err
    (result,) = json.loads(out)
    assert {name: s["pairs"] for name, s in result["sets"].items()} == {"first": 2, "second": 3}


@pytest.mark.timeout(60)
def test_rlhf_score_refuses_a_test_set_given_as_a_checkpoint_before_loading(tiny, tmp_path, run_qwen):
    first = tmp_path / "first.jsonl"
    _pairs(first, 2)
    code, _, err = run_qwen("rlhf", "score", tiny, first, "--pairs", first)
    assert code == 2 and f"{first}: not a model directory" in err
    code, _, err = run_qwen("rlhf", "score", tiny, "--pairs", first, tmp_path / "missing.jsonl")
    assert code == 2 and "missing.jsonl" in err

"""The toy task of `make demo-rlhf`: two-digit sums whose held-out questions no training file holds,
and the check that turns the demo red when a stage's headline number regresses."""

from __future__ import annotations

import json
import re

import pytest

from qwen_cli.errors import UserError
from qwen_cli.rl import toy_report
from qwen_cli.rl.pairs import build
from qwen_cli.rl.pairs.output import split, write


def read(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_addition_pairs_and_training_files_hold_only_training_questions(tmp_path):
    built = build("addition", limit=300, seed=1)
    train, test = split(built.pairs, 0.1, 1)
    write(tmp_path / "out", "addition", built, train, test, overwrite=False)
    out = tmp_path / "out"
    for row in read(out / "train.jsonl") + read(out / "test.jsonl"):
        a, b = map(int, re.fullmatch(r"What is (\d+) \+ (\d+)\?", row["prompt"]).groups())
        assert 1 <= a <= 99 and 1 <= b <= 99 and row["chosen"] == str(a + b)[::-1] != row["rejected"]  # least significant digit first
    held = {row["prompt"] for row in read(out / "prompts_test.jsonl")}
    assert len(held) == 30 and held == {row["prompt"] for row in read(out / "test.jsonl")}
    sft = read(out / "sft.jsonl")
    text = read(out / "text.jsonl")
    assert len(sft) == len(text) == 270
    for conversation, line in zip(sft, text, strict=True):
        user, assistant = conversation["messages"]
        assert user["content"] not in held and line["text"] == f"{user['content']} {assistant['content']}"
    with pytest.raises(UserError, match="9801 distinct"):
        build("addition", limit=9802)


MEASURED = {"sft_gold": 0.40, "rm_accuracy": 0.95, "ppo_gold": 0.52, "ppo_max_kl": 0.3,
            "dpo_gold_before": 0.40, "dpo_gold": 0.45}


@pytest.mark.parametrize(("changed", "message"), [
    ({"sft_gold": 0.05, "ppo_gold": 0.2, "dpo_gold_before": 0.05, "dpo_gold": 0.1}, "SFT gold"),
    ({"sft_gold": 0.8, "ppo_gold": 0.95, "dpo_gold_before": 0.8, "dpo_gold": 0.85}, "SFT gold"),
    ({"rm_accuracy": 0.5}, "reward-model"), ({"ppo_gold": 0.45}, "PPO gain"), ({"ppo_max_kl": 3.0}, "PPO KL"),
    ({"dpo_gold": 0.40}, "DPO gain"),
])
def test_the_demo_check_names_each_regression(changed, message):
    assert toy_report.failures(MEASURED) == []
    (failure,) = toy_report.failures({**MEASURED, **changed})
    assert failure.startswith(message)


def test_the_short_demo_prints_without_checking(tmp_path, monkeypatch, capsys):
    """``--no-floors`` (demo_rlhf.sh --short) prints the same numbers and exits 0 where the full check fails."""
    monkeypatch.setattr(toy_report, "measure", lambda run_dir: {**MEASURED, "rm_accuracy": 0.5}
                        if run_dir == tmp_path else {})
    assert toy_report.main([str(tmp_path)]) == 1
    assert "REGRESSION: reward-model" in capsys.readouterr().err
    assert toy_report.main(["--no-floors", str(tmp_path)]) == 0
    assert "50.0%" in capsys.readouterr().out

"""The toy task of `make demo-rlhf`: two-digit sums whose held-out questions no training file holds,
and the check that turns the demo red when a stage's headline number regresses."""

from __future__ import annotations

import json
import random
import re

import pytest

from qwen_cli.errors import UserError
from qwen_cli.rl import toy_report
from qwen_cli.rl.pairs import build
from qwen_cli.rl.pairs.arithmetic import digit_slip, near_misses
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


MEASURED = {"sft_gold": 0.40, "rm_accuracy": 0.95, "rm_sample_accuracy": 0.9, "ppo_gold": 0.52, "ppo_max_kl": 0.3,
            "ppo_ranking_first": 0.9, "ppo_ranking_last": 0.8, "dpo_gold_before": 0.40, "dpo_gold": 0.45}


def test_the_numbers_are_read_from_the_files_each_stage_wrote(tmp_path):
    for stage in ("reward", "ppo", "dpo"):
        (tmp_path / stage).mkdir()
    pmp = {"pairs": {"accuracy": 0.1}, "samples_test": {"accuracy": 0.2}}
    rm = {"pairs": {"accuracy": 0.93, "pairs": 900}, "samples_test": {"accuracy": 0.88, "pairs": 2400}}
    (tmp_path / "reward" / "scores.json").write_text(json.dumps([{"sets": pmp}, {"sets": rm}]))
    steps = [{"step": 0, "eval_gold": 0.3}]
    steps += [{"step": i, "kl": 0.1 * i, "reward_gold_ranking": 0.5 + 0.01 * i} for i in range(1, 11)]
    steps += [{"step": 10, "eval_gold": 0.45}]
    (tmp_path / "ppo" / "metrics.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    (tmp_path / "dpo" / "scores.json").write_text(json.dumps([{"gold": {"gold": 0.31}}, {"gold": {"gold": 0.4}}]))
    m = toy_report.measure(tmp_path)
    assert m == pytest.approx({"sft_gold": 0.3, "rm_accuracy": 0.93, "rm_sample_accuracy": 0.88, "ppo_gold": 0.45,
                               "ppo_max_kl": 1.0, "ppo_ranking_first": 0.53, "ppo_ranking_last": 0.58,
                               "dpo_gold_before": 0.31, "dpo_gold": 0.4})


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


def test_several_near_misses_per_question_keep_one_line_per_question_in_the_other_files(tmp_path):
    built = build("addition", limit=200, seed=3, per_question=4)
    once = build("addition", limit=200, seed=3)
    assert built.answers == once.answers  # the same questions (and SFT data) whatever per_question is
    first = {}
    for pair in built.pairs:
        first.setdefault(pair.prompt, pair.rejected)
    assert first == {pair.prompt: pair.rejected for pair in once.pairs}  # the first near miss too
    assert build("addition", limit=200, seed=4, per_question=4).answers != built.answers
    by_question: dict[str, list[dict]] = {}
    for pair in built.pairs:
        by_question.setdefault(pair.prompt, []).append(pair)
    for prompt, pairs in by_question.items():
        rejected = [p.rejected for p in pairs]
        assert len(set(rejected)) == len(rejected) and built.answers[prompt] not in rejected
        assert len(pairs) == 4 or int(built.answers[prompt][::-1]) < 10  # a one-digit sum has fewer near misses
    assert len(built.pairs) > 3.9 * 200
    train, test = split(built.pairs, 0.1, 3)
    write(tmp_path / "out", "addition", built, train, test, overwrite=False)
    prompts = read(tmp_path / "out" / "prompts.jsonl")
    assert len(prompts) == len({row["prompt"] for row in prompts}) == 180
    assert len(read(tmp_path / "out" / "prompts_test.jsonl")) == 20
    assert len(read(tmp_path / "out" / "sft.jsonl")) == len(read(tmp_path / "out" / "text.jsonl")) == 180
    assert len(read(tmp_path / "out" / "train.jsonl")) == len(train) > 3.9 * 180
    with pytest.raises(UserError, match="per-question"):
        build("gsm8k", per_question=2)


def test_the_default_of_one_near_miss_per_question_draws_what_it_drew_before_the_option():
    golden = [("What is 3 + 75?", "87", "86"), ("What is 17 + 60?", "77", "57"), ("What is 80 + 14?", "49", "79"),
              ("What is 42 + 94?", "631", "331")]  # seed 0, from the code before --per-question existed (a54d273)
    assert [(p.prompt, p.chosen, p.rejected) for p in build("addition", limit=4, seed=0).pairs] == golden


def test_a_gain_of_exactly_the_floor_passes_whatever_the_floating_point_rounding():
    assert 0.35 - 0.25 < toy_report.PPO_GAIN  # 0.09999999999999998
    assert toy_report.failures({**MEASURED, "sft_gold": 0.25, "ppo_gold": 0.35}) == []


@pytest.mark.parametrize(("value", "options"), [
    (12, {10, 11, 13, 14, 15, 16, 17, 18, 19, 22, 32, 42, 52, 62, 72, 82, 92}),  # one digit replaced, either one
    (105, {100, 101, 102, 103, 104, 106, 107, 108, 109, 115, 125, 135, 145, 155, 165, 175, 185, 195,
           205, 305, 405, 505, 605, 705, 805, 905}),  # no leading zero
    (-7, {0, -1, -2, -3, -4, -5, -6, -8, -9}),  # the sign kept
])
def test_a_digit_slip_replaces_one_digit_by_another(value, options):
    assert {digit_slip(value, random.Random(seed)) for seed in range(3000)} == options


def test_digit_slips_hit_every_position_equally_often():
    rng = random.Random(0)
    tens = sum(digit_slip(57, rng) % 10 == 7 for _ in range(4000))  # the units digit kept: the tens digit slipped
    assert 1800 < tens < 2200


def test_the_extra_near_misses_are_digit_slips():
    misses = near_misses(57, 56, 8, random.Random(0))
    assert misses[0] == 56 and len(set(misses)) == 8
    assert all(len(str(m)) == 2 and sum(a != b for a, b in zip(str(m), "57", strict=True)) == 1 for m in misses[1:])

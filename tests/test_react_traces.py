"""Tool-use traces with real observations (``python -m qwen_cli.agent.traces``): the questions and their
answers, the records' ReAct format (full and compact), the benchmark files, bad input; and, slow,
the whole generator with every cell really run in the sandbox."""

from __future__ import annotations

import contextlib
import io
import json
import random

import pytest

from qwen_cli.agent.react import parse_reply
from qwen_cli.agent.tools import code_of
from qwen_cli.agent.traces import FULL_KINDS, KINDS, Problem, benchmark_files, main, problems, record, solve
from qwen_cli.data.react import COMPACT_PROMPT, from_react, react_prompt, record_tools


def _printed(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, {})  # our own generated code, not a model's
    return out.getvalue().strip()


def test_each_kind_prints_its_known_answer_and_questions_are_distinct():
    found = problems(list(KINDS), 60, random.Random(3))
    assert len({p.question for p in found}) == 60
    for problem in found:
        assert _printed(problem.code) == problem.answer, problem.question


def test_a_full_record_offers_the_code_tool_among_others_and_replays_as_react():
    rng = random.Random(0)
    records = [record(p, False, rng) for p in problems(FULL_KINDS, 30, rng)]
    assert {r["steps"][0]["action"] for r in records} == {"python", "code_interpreter"}
    assert max(len(r["tools"]) for r in records) == 3 and min(len(r["tools"]) for r in records) == 1
    for r in records:
        r["steps"][0]["observation"] = r["final_answer"]
        user, assistant = from_react(r)[-2:]
        assert user["content"] == react_prompt(r["question"], record_tools(r))
        _, action, action_input, final = parse_reply(assistant["content"])
        assert action == r["steps"][0]["action"] and final is None
        assert _printed(code_of(action_input)) == r["final_answer"]
        assert assistant["content"].endswith(f"Final Answer: {r['final_answer']}")


def test_a_compact_record_is_the_short_prompt_and_short_thoughts():
    problem = problems(["addition"], 1, random.Random(1))[0]
    r = record(problem, True, random.Random(1))
    r["steps"][0]["observation"] = problem.answer
    user, assistant = from_react(r)
    assert user["content"] == COMPACT_PROMPT.format(tool_names="python", question=problem.question)
    assert assistant["content"] == (f"Thought: use python\nAction: python\nAction Input: {problem.code}\n"
                                    f"Observation: {problem.answer}\nThought: done\nFinal Answer: {problem.answer}")
    with pytest.raises(ValueError, match="'compact' must be true or false"):
        from_react({**r, "compact": "yes"})


def test_benchmark_files_are_positive_tool_choices_and_math_questions():
    rng = random.Random(2)
    test = [record(p, False, rng) for p in problems(FULL_KINDS, 5, rng)]
    questions, tool_use = benchmark_files(test)
    assert questions[0] == {"query": test[0]["question"], "tags": "math", "answer": test[0]["final_answer"]}
    for item, r in zip(tool_use, test, strict=True):
        assert item["prompt"].endswith(f"Question: {r['question']}")
        assert parse_reply(item["response"])[1] == r["steps"][0]["action"]


@pytest.mark.parametrize(("args", "message"), [
    (["--kinds", "modpow,roots"], "error: --kinds: unknown kind 'roots'"),
    (["--train", "0"], "error: --train must be at least 1"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    assert main(["--out", str(tmp_path / "t"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and not (tmp_path / "t").exists()


def test_an_existing_output_is_refused_before_any_work(tmp_path, capsys):
    assert main(["--out", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("compact", [False, True])
def test_every_kept_observation_is_the_sandbox_printing_the_known_answer(tmp_path, capsys, compact):
    out = tmp_path / "traces"
    assert main(["--out", str(out), "--train", "6", "--test", "4", "--seed", "5", *(["--compact"] * compact)]) == 0
    assert "6 train + 4 test traces (0 dropped)" in capsys.readouterr().out
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (out / "test.jsonl").read_text().splitlines()]
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    for r in train + test:
        assert r["steps"][0]["observation"] == r["final_answer"] == _printed(code_of(r["steps"][0]["action_input"]))
    assert (out / "code_interpreter.jsonl").exists() != compact


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_trace_whose_sandbox_run_disagrees_with_the_known_answer_is_dropped():
    rng = random.Random(0)
    assert solve(Problem("What is 2 + 2?", "print(2 + 2)", "4"), True, rng)["steps"][0]["observation"] == "4"
    assert solve(Problem("What is 2 + 2?", "print(2 + 3)", "4"), True, rng) is None
    assert solve(Problem("What is 2 + 2?", "raise SystemExit(4)", "4"), True, rng) is None


@pytest.mark.timeout(120)
def test_chat_falls_back_to_the_compact_prompt_when_qwens_does_not_fit(tmp_path, capsys):
    from rich.console import Console
    from test_agent_chat import bigram_checkpoint

    from qwen_cli.agent.chat import run_tool_loop
    from qwen_cli.agent.tools import make_tools
    from qwen_cli.checkpoint import load
    from qwen_cli.inference.chat_session import ChatSession

    model, tok = load(bigram_checkpoint(tmp_path / "ckpt"))
    session = ChatSession(model, tok, max_new_tokens=16, window=120)
    run_tool_loop(session, make_tools(["python"]), iter(["What is 2**10?"]), Console(stderr=True, soft_wrap=True), False, False, 1)
    err = capsys.readouterr().err
    assert "of the model's 120: using the compact prompt" in err and "action: python" in err

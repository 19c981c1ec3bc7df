"""Tool-use traces with real observations (``python -m qwen_cli.agent.traces``): the questions and their
answers, the records' ReAct format (full and compact), the other-tool and no-tool records of the mix,
the benchmark files, bad input; and, slow, the whole generator with every cell really run in the sandbox."""

from __future__ import annotations

import contextlib
import io
import json
import random

import pytest

from qwen_cli.agent.plain_replies import REPLIES
from qwen_cli.agent.react import parse_reply
from qwen_cli.agent.tools import code_of
from qwen_cli.agent.traces import (
    CODE_TOOLS,
    FULL_KINDS,
    KINDS,
    OTHER_TOOLS,
    Problem,
    benchmark_files,
    main,
    mixed_records,
    plain_record,
    problems,
    record,
    solve,
    split_counts,
    tool_record,
)
from qwen_cli.data.react import COMPACT_PROMPT, from_react, react_prompt, record_tools
from qwen_cli.evaluation.agent.tool_use import load_items, parse_call


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


CODE_NAMES = {t.name for t in CODE_TOOLS}


def test_an_other_tool_record_calls_one_of_its_listed_json_tools_and_replays_as_react():
    rng = random.Random(4)
    records = [tool_record(rng) for _ in range(120)]
    specs = {spec.name: spec for spec in OTHER_TOOLS}
    assert {r["steps"][0]["action"] for r in records} == set(specs)  # every domain tool gets asked
    assert any(CODE_NAMES & {t["name"] for t in r["tools"]} for r in records)
    for r in records:
        step = r["steps"][0]
        names = [t["name"] for t in r["tools"]]
        assert r["kind"] == "tool" and step["action"] in names and step["action"] not in CODE_NAMES
        assert len(names) == len(set(names)) and 1 <= len(names) <= 4
        arguments = json.loads(step["action_input"])
        assert set(arguments) == set(specs[step["action"]].parameters["required"])
        assert json.loads(step["observation"])  # a JSON result, left out of the loss
        user, assistant = from_react(r)[-2:]
        assert user["content"] == react_prompt(r["question"], record_tools(r))
        thought, action, action_input, final = parse_reply(assistant["content"])
        assert (action, action_input, final) == (step["action"], step["action_input"], None)
        assert assistant["content"].endswith(f"Final Answer: {r['final_answer']}")
        assert assistant["unsupervised"] and step["observation"] in assistant["content"]


def test_a_no_tool_record_has_no_action_and_its_final_answer_is_the_known_reply():
    rng = random.Random(5)
    seen_code_tool = False
    for _ in range(200):
        reply = rng.choice(REPLIES)(rng)
        r = plain_record(reply, rng)
        names = {t["name"] for t in r["tools"]}
        assert r["kind"] == "none" and r["steps"] == [] and r["final_answer"] == reply.answer
        assert 1 <= len(names) <= 4
        if reply.arithmetic:
            assert not names & CODE_NAMES
            a, word, b = reply.question.removeprefix("What is ").removesuffix("?").split()
            assert reply.answer == f"{a} {word} {b} is {int(a) + int(b) if word == 'plus' else int(a) * int(b)}."
        seen_code_tool |= bool(names & CODE_NAMES)
        user, assistant = from_react(r)[-2:]
        assert user["content"] == react_prompt(r["question"], record_tools(r))
        assert assistant["content"] == f"Thought: {reply.thought}\nFinal Answer: {reply.answer}"
        assert assistant["unsupervised"] == []
        _, action, _, final = parse_reply(assistant["content"])
        assert action is None and final == reply.answer and parse_call(assistant["content"]) is None
    assert seen_code_tool  # listing python does not mean calling it


THIRD_PERSON = {"walks", "plays", "cooks", "visits", "watches", "cleans", "paints", "opens", "calls", "finishes"}


def _split_sentence(sentence: str) -> tuple[str, str, str]:
    subject = "My brother" if sentence.startswith("My brother ") else sentence.split()[0]
    verb, rest = sentence[len(subject) + 1:].split(" ", 1)
    return subject, verb, rest


def test_advice_verse_and_past_tense_replies_answer_what_was_asked():
    rng = random.Random(8)
    seen = {"advice": 0, "verse": 0, "past": 0}
    for _ in range(300):
        reply = rng.choice(REPLIES)(rng)
        question, answer = reply.question, reply.answer
        if question.startswith(("Give me", "Any advice", "What should I keep")):
            seen["advice"] += 1
            wanted = 2 if question.startswith("Give me two") else 3
            assert len(answer.removesuffix(".").split("; ")) == wanted and answer.endswith(".")
        elif "rhym" in question or "verse" in question:
            seen["verse"] += 1
            first, second = answer.split("\n")
            assert first.endswith(",") and second.endswith(".")
        elif "past tense" in question:
            seen["past"] += 1
            subject, verb, rest = _split_sentence(question.split(": ", 1)[1])
            if subject in ("She", "He", "My brother"):  # third person: walks, watches, finishes
                assert verb in THIRD_PERSON
                stem = verb[:-2] if verb.endswith(("ches", "shes")) else verb.removesuffix("s")
                assert stem != verb
            else:
                stem = verb
            assert answer == f"{subject} {stem}ed {rest}"
    assert min(seen.values()) >= 20, seen


def test_mixed_records_alternate_other_tool_and_no_tool_with_distinct_new_questions():
    taken = {"Hi there!", "Good morning!"}
    records = mixed_records(101, random.Random(6), taken)
    assert [r["kind"] for r in records[:4]] == ["tool", "none", "tool", "none"]
    assert sum(r["kind"] == "tool" for r in records) == 51 and sum(r["kind"] == "none" for r in records) == 50
    questions = [r["question"] for r in records]
    assert len(set(questions)) == 101 and not taken & set(questions)


def test_the_packaged_tool_use_benchmark_stays_held_out():
    packaged = {item.prompt.rsplit("Question:", 1)[-1].strip() for item in load_items()}
    benchmark_tools = {line.split(":", 1)[0] for item in load_items() for line in item.prompt.splitlines()
                       if ": Call this tool" in line}
    ours = mixed_records(300, random.Random(7))
    assert not packaged & {r["question"] for r in ours}
    # nor the topics of its no-tool items (sleep tips, an autumn poem, a summary): those measure transfer
    assert not [r["question"] for r in ours
                if r["kind"] == "none" and any(w in r["question"].lower() for w in ("sleep", "autumn", "summar"))]
    assert not benchmark_tools & {t["name"] for r in ours for t in r["tools"]}


@pytest.mark.parametrize(("train", "test", "mix", "counts"), [
    (320, 80, 0.5, (160, 40, 160, 40)), (200, 40, 0.0, (200, 40, 0, 0)), (10, 3, 0.25, (8, 2, 2, 1))])
def test_the_mix_fraction_is_the_share_of_other_tool_and_no_tool_records(train, test, mix, counts):
    assert split_counts(train, test, mix) == counts


def test_benchmark_files_hold_only_code_questions_and_no_tool_records_are_the_negatives():
    rng = random.Random(8)
    test = [record(p, False, rng) for p in problems(FULL_KINDS, 3, rng)] + mixed_records(4, rng)
    questions, tool_use = benchmark_files(test)
    assert [q["query"] for q in questions] == [r["question"] for r in test[:3]]
    assert [parse_call(item["response"]) is None for item in tool_use] == [False] * 3 + [False, True, False, True]


@pytest.mark.parametrize(("args", "message"), [
    (["--kinds", "modpow,roots"], "error: --kinds: unknown kind 'roots'"),
    (["--train", "0"], "error: --train must be at least 1"),
    (["--mix", "1"], "error: --mix must be at least 0 and below 1"),
    (["--compact", "--mix", "0.3"], "error: --mix: --compact traces are code questions only"),
    (["--train", "1", "--mix", "0.6"], "error: --mix 0.6 leaves no code question"),
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
    code = [r for r in train + test if r.get("kind", "code") == "code"]
    # the default mix: half of each split other-tool and no-tool records (none with --compact)
    assert len(code) == (10 if compact else 5)
    if not compact:
        assert sorted(r["kind"] for r in train) == ["code"] * 3 + ["none"] + ["tool"] * 2
        assert sorted(r["kind"] for r in test) == ["code"] * 2 + ["none", "tool"]
    for r in code:
        assert r["steps"][0]["observation"] == r["final_answer"] == _printed(code_of(r["steps"][0]["action_input"]))
    assert (out / "code_interpreter.jsonl").exists() != compact
    if not compact:
        assert len((out / "code_interpreter.jsonl").read_text().splitlines()) == 2
        assert len((out / "tool_use.jsonl").read_text().splitlines()) == 4


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_code_questions_do_not_depend_on_the_mix(tmp_path):
    assert main(["--out", str(tmp_path / "plain"), "--train", "3", "--test", "2", "--mix", "0"]) == 0
    assert main(["--out", str(tmp_path / "mixed"), "--train", "12", "--test", "8", "--mix", "0.75"]) == 0
    plain, mixed = ((tmp_path / d / "code_interpreter.jsonl").read_text() for d in ("plain", "mixed"))
    assert plain == mixed and len(plain.splitlines()) == 2
    kinds = [json.loads(line)["kind"] for line in (tmp_path / "mixed" / "train.jsonl").read_text().splitlines()]
    assert sorted(kinds) == ["code"] * 3 + ["none"] * 4 + ["tool"] * 5


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

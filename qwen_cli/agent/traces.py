"""Tool-use SFT data whose observations are real: generated questions, their code, run in the sandbox.

Each question has a known answer (computed here) that a small model cannot work out in its head:
modular powers, big products, sums of long lists, prime counts, digit sums of powers; ``addition``
(three-digit sums) is the compact set for the tiny demo model. The code that answers it runs in the
``python`` tool's sandboxed session, exactly as in ``qwen chat --tools``; a trace is kept only when
the cell ran cleanly and printed the known answer.

    python -m qwen_cli.agent.traces --out DIR [--train N] [--test N] [--kinds K,...] [--compact] [--seed S]

writes, into a new ``DIR``:

- ``train.jsonl`` and ``test.jsonl``: ReAct records (``qwen_cli.data.react``) for ``qwen sft``; the
  code tool is named ``python`` or ``code_interpreter`` (the benchmark's name) at random and listed
  with 0-2 unrelated tools, so the model learns to pick it; half the records carry Qwen's system
  prompt (what the benchmarks send), half leave it to the SFT recipe's default. ``--compact``: only
  ``python``, the short prompt and short thoughts, for a 256-token window.
- ``code_interpreter.jsonl``: the test questions with their answers, for
  ``qwen eval --tasks code-interpreter --data``; ``tool_use.jsonl``: the test records as tool-choice
  prompts and reference replies, for ``qwen eval --tasks tool-use --data``.

Questions are distinct across the two splits.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from qwen_cli.agent.tools import PythonTool
from qwen_cli.data.chat_template import DEFAULT_SYSTEM
from qwen_cli.data.react import CODE_INTERPRETER_SPEC, TOOL_SPECS, ToolSpec, from_react
from qwen_cli.errors import UserError
from qwen_cli.fsutil import atomic_dir


@dataclass(frozen=True)
class Problem:
    """A question, the Python that answers it by printing, and the answer computed on the host."""

    question: str
    code: str
    answer: str


def _modpow(rng: random.Random) -> Problem:
    a, b, m = rng.randint(2, 999), rng.randint(20, 999), rng.randint(7, 997)
    return Problem(f"What is {a}**{b} mod {m}?", f"print(pow({a}, {b}, {m}))", str(pow(a, b, m)))


def _product(rng: random.Random) -> Problem:
    a, b = rng.randint(1000, 9_999_999), rng.randint(1000, 9_999_999)
    return Problem(f"What is {a} * {b}?", f"print({a} * {b})", str(a * b))


def _list_sum(rng: random.Random) -> Problem:
    values = [rng.randint(100, 99_999) for _ in range(rng.randint(6, 10))]
    listed = ", ".join(map(str, values[:-1])) + f" and {values[-1]}"
    return Problem(f"What is the sum of {listed}?", f"print(sum({values}))", str(sum(values)))


def _is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))


def _primes(rng: random.Random) -> Problem:
    n = rng.randint(100, 20_000)
    code = f"print(sum(all(n % d for d in range(2, int(n ** 0.5) + 1)) for n in range(2, {n})))"
    return Problem(f"How many prime numbers are there below {n}?", code, str(sum(map(_is_prime, range(n)))))


def _digit_sum(rng: random.Random) -> Problem:
    k = rng.randint(50, 2000)
    return Problem(f"What is the sum of the digits of 2**{k}?", f"print(sum(int(c) for c in str(2 ** {k})))",
                   str(sum(int(c) for c in str(2**k))))


def _addition(rng: random.Random) -> Problem:
    a, b = rng.randint(100, 999), rng.randint(100, 999)
    return Problem(f"What is {a} + {b}?", f"print({a}+{b})", str(a + b))


KINDS: dict[str, Callable[[random.Random], Problem]] = {
    "modpow": _modpow, "product": _product, "sum": _list_sum, "primes": _primes, "digits": _digit_sum,
    "addition": _addition}
FULL_KINDS = ("modpow", "product", "sum", "primes", "digits")
CODE_TOOLS = (TOOL_SPECS["python"], CODE_INTERPRETER_SPEC)
OTHER_TOOLS = tuple(ToolSpec(name, description, {"type": "object", "properties": {key: {"type": "string"}},
                                                  "required": [key]}, human_name)
                    for name, human_name, description, key in (
    ("weather_now", "Weather", "Current weather of a city: temperature, wind and sky.", "city"),
    ("wiki_search", "Encyclopedia", "Looks up facts about people, places and events.", "query"),
    ("image_gen", "Image generation", "Draws a picture from a text description.", "prompt"),
    ("translate", "Translation", "Translates text into another language.", "text")))
THOUGHT = "I should compute this exactly with Python."


def problems(kinds: Sequence[str], count: int, rng: random.Random) -> list[Problem]:
    """``count`` problems with distinct questions, kinds drawn in turn from ``kinds``."""
    found: dict[str, Problem] = {}
    tries = 0
    while len(found) < count:
        tries += 1
        if tries > 100 * count:
            raise UserError(f"only {len(found)} distinct questions of {', '.join(kinds)} found; ask for fewer")
        problem = KINDS[kinds[len(found) % len(kinds)]](rng)
        found.setdefault(problem.question, problem)
    return list(found.values())


def record(problem: Problem, compact: bool, rng: random.Random) -> dict:
    """The ReAct record of one problem (see the module docstring for the two styles), its observation empty."""
    if compact:
        return {"question": problem.question, "tools": ["python"], "compact": True, "final_thought": "done",
                "steps": [{"thought": "use python", "action": "python", "action_input": problem.code,
                           "observation": ""}], "final_answer": problem.answer}
    code_tool = rng.choice(CODE_TOOLS)
    tools = [code_tool, *rng.sample(OTHER_TOOLS, rng.randint(0, 2))]
    rng.shuffle(tools)
    trace = {"question": problem.question, "tools": [asdict(t) for t in tools],
             "steps": [{"thought": THOUGHT, "action": code_tool.name, "action_input": f"```py\n{problem.code}\n```",
                        "observation": ""}], "final_answer": problem.answer}
    return {"system": DEFAULT_SYSTEM, **trace} if rng.random() < 0.5 else trace


def solve(problem: Problem, compact: bool, rng: random.Random) -> dict | None:
    """The problem's record with the observation of its Action Input run in a fresh sandboxed session,
    or None when the cell failed or did not print the answer."""
    trace = record(problem, compact, rng)
    step = trace["steps"][0]
    tool = PythonTool()
    try:
        observation = tool.call(step["action_input"])
    finally:
        tool.close()
    if observation.error or observation.text.strip() != problem.answer:
        return None
    step["observation"] = observation.text
    return trace


def benchmark_files(test: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """The test records as ``code-interpreter`` questions and as ``tool-use`` prompts with reference replies."""
    questions = [{"query": r["question"], "tags": "math", "answer": r["final_answer"]} for r in test]
    tool_use = []
    for r in test:
        user, assistant = from_react(r)[-2:]
        tool_use.append({"prompt": user["content"], "response": assistant["content"]})
    return questions, tool_use


def write(out: Path, train: list[dict], test: list[dict], compact: bool) -> None:
    """``out`` with every file of the module docstring, complete or not at all."""
    files = {"train.jsonl": train, "test.jsonl": test}
    if not compact:
        files["code_interpreter.jsonl"], files["tool_use.jsonl"] = benchmark_files(test)
    with atomic_dir(out, overwrite=False) as tmp:
        for name, rows in files.items():
            (tmp / name).write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qwen_cli.agent.traces", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="new output directory")
    parser.add_argument("--train", type=int, default=200, help="training traces (default 200)")
    parser.add_argument("--test", type=int, default=40, help="held-out traces (default 40)")
    parser.add_argument("--kinds", default=None, help=f"comma list of {', '.join(KINDS)} "
                        f"(default: {','.join(FULL_KINDS)}; --compact: addition)")
    parser.add_argument("--compact", action="store_true", help="short prompt and thoughts (tiny models)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    kinds = (args.kinds or ("addition" if args.compact else ",".join(FULL_KINDS))).split(",")
    try:
        if unknown := [k for k in kinds if k not in KINDS]:
            raise UserError(f"--kinds: unknown kind {unknown[0]!r} (choose among {', '.join(KINDS)})")
        if args.train < 1 or args.test < 0:
            raise UserError("--train must be at least 1 and --test at least 0")
        if args.out.exists():
            raise UserError(f"--out {args.out}: already exists")
        rng = random.Random(args.seed)
        wanted = problems(kinds, args.train + args.test, rng)
        solved = [(problem, solve(problem, args.compact, rng)) for problem in wanted]
        records = [trace for _, trace in solved if trace is not None]
        dropped = [problem.question for problem, trace in solved if trace is None]
        if dropped:
            print(f"dropped {len(dropped)} traces whose observation was not the answer, e.g. {dropped[0]!r}",
                  file=sys.stderr)
        n_test = round(len(records) * args.test / (args.train + args.test))
        write(args.out, records[n_test:], records[:n_test], args.compact)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(records) - n_test} train + {n_test} test traces ({len(dropped)} dropped) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

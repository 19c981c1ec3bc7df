"""Generated integer arithmetic ("What is 37 + 45?"): chosen the exact answer, rejected a near miss.

The cleanest pairs there are (the preferred side is computed, not judged), and their prompts double
as PPO prompts with a gold answer, so a PPO run can measure exact-match on held-out questions.
``arithmetic`` mixes sums, differences and times tables; ``addition`` (two-digit sums only) is the
toy task a tiny model learns in minutes (``make demo-rlhf``). Its answers are written least
significant digit first (79 + 15 → ``49``), so a causal model produces, and a reward model checks,
each digit from digits it has already seen plus a carry (Lee et al. 2023, "Teaching arithmetic to
small transformers"); in the usual order the first digit depends on a carry not yet written.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Callable
from pathlib import Path

from qwen_cli.errors import UserError
from qwen_cli.rl.pairs.common import Built, Pair, perturb_int

DEFAULT_COUNT = 5000
OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
# operand ranges: two-digit sums and differences (never negative), times tables up to 19 x 19
RANGES = {"+": (1, 99), "-": (1, 99), "*": (2, 19)}
DISTINCT = {"+": 99 * 99, "-": 99 * 100 // 2, "*": 18 * 18}  # distinct questions per operator


def _question(rng: random.Random, symbols: tuple[str, ...]) -> tuple[str, int]:
    symbol = rng.choice(symbols)
    low, high = RANGES[symbol]
    a, b = rng.randint(low, high), rng.randint(low, high)
    if symbol == "-" and a < b:
        a, b = b, a
    return f"What is {a} {symbol} {b}?", OPERATORS[symbol](a, b)


def digit_slip(value: int, rng: random.Random) -> int:
    """``value`` with one digit, at a position drawn uniformly, replaced by another (the sign kept, no leading zero).

    Every digit is wrong equally often, so a reward model trained on these must check each one: with
    the off-by-1-3 perturbations most misses differ in the units digit, which a model learns to check
    long before the tens digit, whose check needs the carry."""
    digits = str(abs(value))
    i = rng.randrange(len(digits))
    other = rng.choice([d for d in "0123456789" if d != digits[i] and not (i == 0 and d == "0" and len(digits) > 1)])
    return (-1 if value < 0 else 1) * int(digits[:i] + other + digits[i + 1:])


def near_misses(value: int, first: int, k: int, rng: random.Random) -> list[int]:
    """``first`` and up to ``k - 1`` more distinct near misses of ``value``: digit slips from ``rng`` (fewer when
    it has fewer, e.g. a one-digit answer)."""
    found = [first]
    for _ in range(20 * k):
        if len(found) == k:
            break
        miss = digit_slip(value, rng)
        if miss not in found:
            found.append(miss)
    return found


def _build(name: str, symbols: tuple[str, ...], count: int | None, rng: random.Random, per_question: int,
           seed: int, write: Callable[[int], str] = str) -> Built:
    count = DEFAULT_COUNT if count is None else count
    most = sum(DISTINCT[s] for s in symbols)
    if count > most:
        raise UserError(f"{name}: --limit {count} is more than the {most} distinct questions")
    more = random.Random(f"{name} {seed} more near misses")  # its own stream: the questions and first near
    answers: dict[str, str] = {}                              # misses do not depend on per_question
    pairs = []
    while len(answers) < count:
        prompt, value = _question(rng, symbols)
        if prompt in answers:
            continue
        answers[prompt] = write(value)
        misses = near_misses(value, perturb_int(value, rng), per_question, more)
        pairs += [Pair(prompt, write(value), write(miss), prompt) for miss in misses]
    return Built(pairs, "generated", answers)


def arithmetic(data_dir: Path | None, count: int | None, rng: random.Random, per_question: int = 1,
               seed: int = 0) -> Built:
    """``count`` distinct questions (default 5000) of +, − and ×, ``per_question`` pairs each (distinct near
    misses; generated: no ``data_dir``)."""
    return _build("arithmetic", tuple(OPERATORS), count, rng, per_question, seed)


def addition(data_dir: Path | None, count: int | None, rng: random.Random, per_question: int = 1,
             seed: int = 0) -> Built:
    """``count`` distinct two-digit sums (default 5000), ``per_question`` pairs each, answers reversed: the toy
    task of ``make demo-rlhf``."""
    return _build("addition", ("+",), count, rng, per_question, seed, write=lambda value: str(value)[::-1])

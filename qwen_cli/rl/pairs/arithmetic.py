"""Generated integer arithmetic ("What is 37 + 45?"): chosen the exact answer, rejected a near miss.

The cleanest pairs there are (the preferred side is computed, not judged), and their prompts double
as PPO prompts with a gold answer, so a PPO run can measure exact-match on held-out questions.
"""

from __future__ import annotations

import operator
import random
from pathlib import Path

from qwen_cli.errors import UserError
from qwen_cli.rl.pairs.common import Built, Pair, perturb_int

DEFAULT_COUNT = 5000
OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
# operand ranges: two-digit sums and differences (never negative), times tables up to 19 x 19
RANGES = {"+": (1, 99), "-": (1, 99), "*": (2, 19)}
MAX_COUNT = 99 * 99 + 99 * 100 // 2 + 18 * 18  # the number of distinct questions


def _question(rng: random.Random) -> tuple[str, int]:
    symbol = rng.choice(tuple(OPERATORS))
    low, high = RANGES[symbol]
    a, b = rng.randint(low, high), rng.randint(low, high)
    if symbol == "-" and a < b:
        a, b = b, a
    return f"What is {a} {symbol} {b}?", OPERATORS[symbol](a, b)


def arithmetic(data_dir: Path | None, count: int | None, rng: random.Random) -> Built:
    """``count`` distinct questions (default 5000), one pair each (generated: no ``data_dir``)."""
    count = DEFAULT_COUNT if count is None else count
    if count > MAX_COUNT:
        raise UserError(f"arithmetic: --limit {count} is more than the {MAX_COUNT} distinct questions")
    answers: dict[str, str] = {}
    pairs = []
    while len(pairs) < count:
        prompt, value = _question(rng)
        if prompt in answers:
            continue
        answers[prompt] = str(value)
        pairs.append(Pair(prompt, str(value), str(perturb_int(value, rng)), prompt))
    return Built(pairs, "generated", answers)

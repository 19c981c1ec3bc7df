"""The benchmark items instruction data is checked against: every benchmark the registry can find.

An item's text is every string in its row (question, choices, reference answer, tests), so an
instruction document that copies any part of an item at n-gram length is caught.
"""

from __future__ import annotations

from pathlib import Path

from qwen_cli.evaluation.harness.registry import SPLITS, DataUnavailable, resolve
from qwen_cli.prepare.config import InstructSection


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def benchmark_texts(section: InstructSection) -> tuple[dict[str, list[str]], dict]:
    """(item texts per benchmark found, report with each benchmark's source or why it was not checked)."""
    names = section.benchmarks or list(SPLITS)
    data_dir = Path(section.data_dir) if section.data_dir else None
    texts, sources, missing = {}, {}, {}
    for name in names:
        try:
            benchmark = resolve(name, data_dir)
        except DataUnavailable as exc:
            missing[name] = str(exc)
            continue
        texts[name] = ["\n".join(_strings(row)) for split in SPLITS[name] for row in benchmark.splits.get(split, [])]
        sources[name] = benchmark.source
    report = {"ngram": section.ngram, "test_items": {n: len(t) for n, t in texts.items()},
              "sources": sources, "not_checked": missing}
    return texts, report

"""The run's manifest: per rule, documents in and out and what was removed (count, bytes, examples).

Counts come from datatrove's per-task statistics (``logs/<stage>/stats/*.json``, summed here so a
resumed run counts every task once); the bytes and examples of removed documents come from the
exclusion files in ``output/removed/<rule>/`` (UTF-8 bytes, the first ``EXAMPLES`` per reason, cut
to ``EXAMPLE_CHARS``). Characters in/out are datatrove's ``doc_len``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from datatrove.pipeline.dedup import ExactDedupFilter, MinhashDedupFilter
from datatrove.pipeline.extractors import Trafilatura

from qwen_cli.prepare.perplexity import PerplexityFilter
from qwen_cli.prepare.stages import Stage
from qwen_cli.prepare.steps import (
    Decontaminate,
    LanguageID,
    QualityRules,
    Resiliparse,
    Upsample,
    WordListFilter,
)
from qwen_cli.recipe import Recipe

EXAMPLES = 3
EXAMPLE_CHARS = 300
RULES = {Trafilatura: "extract", Resiliparse: "extract", LanguageID: "language", QualityRules: "quality", WordListFilter: "offensive",
         ExactDedupFilter: "exact_dedup", MinhashDedupFilter: "minhash_dedup", PerplexityFilter: "perplexity",
         Upsample: "upsample", Decontaminate: "decontamination"}
NOT_COUNTS = {"total", "forwarded", "dropped", "doc_len", "extracted", "batches"}


def merged_stats(logs: Path, stage: Stage) -> list[dict]:
    """Per step of ``stage``: its statistics summed over the tasks (``{"total": n, "doc_len": chars, ...}``)."""
    steps: list[Counter] = [Counter() for _ in stage.pipeline]
    for path in sorted((logs / stage.name / "stats").glob("*.json")):
        for i, step in enumerate(json.loads(path.read_text())):
            for key, value in step.get("stats", {}).items():
                steps[i][key] += value["total"] if isinstance(value, dict) else value
    return [dict(s) for s in steps]


def removed_documents(folder: Path, default_reason: str) -> dict[str, dict]:
    """Removed documents in ``folder`` by reason (``default_reason`` when the step gives none): count,
    UTF-8 bytes, characters and a few examples."""
    reasons: dict[str, dict] = {}
    for path in sorted(folder.rglob("*.jsonl")) if folder.is_dir() else []:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                text, meta = record.get("text", ""), record.get("metadata") or {}
                entry = reasons.setdefault(meta.get("filter_reason", default_reason),
                                           {"docs": 0, "bytes": 0, "chars": 0, "examples": []})
                entry["docs"] += 1
                entry["bytes"] += len(text.encode("utf-8"))
                entry["chars"] += len(text)
                if len(entry["examples"]) < EXAMPLES:
                    entry["examples"].append({"id": record.get("id"), "source": meta.get("source"),
                                              "text": text[:EXAMPLE_CHARS]})
    return reasons


def _rule_entry(rule: str, stats: dict, removed_dir: Path) -> dict:
    removed = removed_documents(removed_dir / rule, "duplicate" if rule.endswith("dedup") else rule)
    extra = {k: v for k, v in stats.items() if k not in NOT_COUNTS and not k.startswith("dropped_")}
    for reason in ("timeout", "broken_process", "clean_error"):  # the extractor's failures, counted only
        if reason in extra:
            removed.setdefault(reason, {"docs": extra.pop(reason)})
    if rule == "extract" and stats.get("dropped"):
        removed["empty_extraction"] = {"docs": stats["dropped"]}
    chars_out = stats.get("doc_len", 0)
    entry = {"rule": rule, "docs_in": stats.get("total", 0), "docs_out": stats.get("forwarded", 0),
             "chars_in": chars_out + sum(r.get("chars", 0) for r in removed.values()), "chars_out": chars_out,
             "removed": removed}
    return {**entry, **extra} if rule == "upsample" else entry


def _output_summary(data: Path) -> dict:
    docs = size = 0
    per_folder: Counter[str] = Counter()
    for path in sorted(data.rglob("*.jsonl")) if data.is_dir() else []:
        group = path.parent.relative_to(data).as_posix()
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                docs += 1
                size += len(json.loads(line)["text"].encode("utf-8"))
                per_folder[group] += 1
    return {"docs": docs, "bytes": size, "docs_per_folder": dict(sorted(per_folder.items()))}


def build_manifest(work: Path, stages: list[Stage], r: Recipe) -> dict:
    """The manifest of a finished run in ``work``."""
    rules = []
    for stage in stages:
        for step, stats in zip(stage.pipeline, merged_stats(work / "logs", stage), strict=True):
            rule = RULES.get(type(step))
            counted = rule is not None and not (isinstance(step, ExactDedupFilter) and stage.name != "dedup")
            if counted:
                rules.append({"stage": stage.name, **_rule_entry(rule, stats, work / "output" / "removed")})
    m = r.minhash
    return {"rules": rules, "output": _output_summary(work / "output" / "data"),
            "minhash": {"ngram": m.ngram, "bands": m.bands, "rows": m.rows,
                        "threshold": round((1 / m.bands) ** (1 / m.rows), 3)} if m.enabled else None,
            "recipe": r.to_dict()}

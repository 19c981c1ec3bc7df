"""``qwen specialize code|math``: Code-Qwen / Code-Qwen-Chat and Math-Qwen-Chat (report §4–§5).

One run directory holds the whole specialisation::

    RUN/manifest.json       kind, recipe, base, data counts, decontamination counts, stages, measurements
    RUN/data/               the decontaminated data sets (``qwen_cli.stages.specialize.datasets``)
    RUN/init/STAGE/         a stage's starting model with its context grown (only when it grows)
    RUN/stages/STAGE/       each stage's trainer run: recipe.toml, metrics.jsonl, checkpoints/, final/

The recipe (``qwen_cli.stages.specialize.recipe``) is planned and checked in full before anything
runs. Then the data is built, and the stages run in order with the shared trainer, each from the
previous one's final model; each is an ordinary ``qwen pretrain`` / ``qwen sft`` run, so it
checkpoints, stops on SIGINT/SIGTERM (exit 130/143) and resumes exactly. ``--resume`` continues
the run: the data is reused (if built with the same settings), finished stages are recognised
as finished, the interrupted one resumes from its newest checkpoint. After the last stage the
measurements of ``qwen_cli.stages.specialize.evaluate`` are written to the manifest.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from qwen_cli.checkpoint.convert import check_checkpoint
from qwen_cli.checkpoint.model_dir import copy_with_config, read_config
from qwen_cli.errors import UserError
from qwen_cli.evaluation.harness.registry import read_jsonl
from qwen_cli.fsutil import atomic_file
from qwen_cli.stages.pretrain import PretrainStage
from qwen_cli.stages.sft import SFTStage
from qwen_cli.stages.specialize import datasets, evaluate
from qwen_cli.stages.specialize.recipe import DATA, INIT, STAGES, Plan, plan
from qwen_cli.terminal import print_table
from qwen_cli.train.trainer import run_stage

MANIFEST = "manifest.json"
STAGE_CLASSES = {"pretrain": PretrainStage, "sft": SFTStage}


@dataclass
class SpecializeResult:
    run_dir: Path
    exit_code: int
    manifest: dict


def _check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other (continue the run, or replace it)")
    found = [name for name in (MANIFEST, DATA, INIT, STAGES) if (run_dir / name).exists()]
    if found and not (resume or overwrite):
        raise UserError(f"{run_dir}: already holds a specialisation ({', '.join(found)}); pass --resume to "
                        "continue it or --overwrite to replace it")
    if overwrite:
        for name in found:
            path = run_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _write(run_dir: Path, manifest: dict) -> None:
    with atomic_file(run_dir / MANIFEST) as handle:
        json.dump(manifest, handle, indent=2, ensure_ascii=False, default=str)
        handle.write("\n")


def _models(run: Plan) -> dict[str, Path]:
    """The models measured: base, the optional baseline, each pretrain stage's and the last stage's result."""
    models = {"base": Path(run.top.specialize.base)}
    if run.top.evaluate.baseline:
        models["baseline"] = Path(run.top.evaluate.baseline)
    for i, stage in enumerate(run.stages):
        if stage.kind == "pretrain" or i == len(run.stages) - 1:
            models[stage.name] = stage.final_dir
    return models


def measure(run: Plan, run_dir: Path, console: Console) -> dict:
    """The kind's measurements (see ``evaluate``) for every model of :func:`_models`."""
    e, data = run.top.evaluate, run_dir / DATA
    models = _models(run)
    if run.top.specialize.kind == "code":
        if not e.code_windows:
            return {}
        texts = [row["text"] for row in read_jsonl(data / datasets.HELDOUT_CODE)]
        lengths = list(e.lengths) or [max(s.recipe.data.seq_len for s in run.stages)]
        console.print(f"measuring held-out code perplexity ({e.code_windows} windows at {lengths} tokens) ...")
        scores = {name: evaluate.perplexity(path, texts, lengths, e.code_windows, e.batch_size)
                  for name, path in models.items()}
        return {"metric": "heldout_code_perplexity", "documents": len(texts), "windows": e.code_windows,
                "scores": scores}
    if not e.math_items:
        return {}
    rows = read_jsonl(data / datasets.HELDOUT_MATH / "test.jsonl")[: e.math_items]
    console.print(f"measuring held-out math exact match ({len(rows)} questions, greedy, ChatML) ...")
    scores = {name: evaluate.math_exact_match(path, rows, e.max_new_tokens, e.batch_size, e.temperature)
              for name, path in models.items()}
    return {"metric": "heldout_math_exact_match", "items": len(rows), "scores": scores}


def _print_scores(measured: dict, console: Console) -> None:
    if not measured:
        return
    table = Table(title=measured["metric"].replace("_", " "))
    table.add_column("model")
    first = next(iter(measured["scores"].values()))
    columns = list(first) if measured["metric"].endswith("perplexity") else ["exact_match"]
    for column in columns:
        table.add_column(f"ppl @ {column}" if column.isdigit() else column, justify="right")
    for name, score in measured["scores"].items():
        table.add_row(name, *(f"{score[c]:.3f}" if c.isdigit() else f"{score[c]:.1%}" for c in columns))
    print_table(console, table)


def _check_inputs(run: Plan) -> None:
    """Data paths the run does not build must exist now, not only when their stage starts."""
    built = {str(path) for path in run.data_names.values()}
    for stage in run.stages:
        data = stage.recipe.data
        if stage.kind == "pretrain":
            paths = [("data.shards", data.shards)] + [(f"data.sources[{i}].shards", s.shards)
                                                      for i, s in enumerate(data.sources)]
        else:
            paths = [("data.train", data.train), ("data.val", data.val)]
        for key, value in paths:
            if value and value not in built and not Path(value).exists():
                raise UserError(f"{run.path}: stage {stage.name}: {key} = '{value}' does not exist")


def specialize(kind: str, recipe_path: Path, overrides: list[str], out: Path | None, resume: bool = False,
               overwrite: bool = False, console: Console | None = None,
               stage_classes: dict | None = None) -> SpecializeResult:
    """Plan, build the data, run every stage, measure; see the module docstring."""
    console = console or Console(stderr=True, highlight=False, soft_wrap=True)
    stage_classes = stage_classes or STAGE_CLASSES
    run_dir = out if out is not None else Path("runs") / recipe_path.resolve().parent.name / kind
    run = plan(recipe_path, kind, overrides, run_dir)  # every recipe error before anything is touched
    _check_inputs(run)
    check_checkpoint(run.stages[0].source)  # the base's weights, before the data is built
    _check_run_dir(run_dir, resume, overwrite)
    run_dir.mkdir(parents=True, exist_ok=True)
    built = datasets.build(run.top, run_dir / DATA, console)
    manifest = {"kind": kind, "recipe": str(recipe_path), "overrides": overrides, "base": run.top.specialize.base,
                "data": built["data"], "decontamination": built["decontamination"], "stages": [], "evaluation": {}}
    _write(run_dir, manifest)
    for number, stage in enumerate(run.stages, 1):
        console.rule(f"stage {number}/{len(run.stages)}: {stage.name} ({stage.kind}, seq_len {stage.recipe.data.seq_len})")
        before = read_config(stage.source) if stage.source.is_dir() else None
        if stage.grown is not None and not stage.init_dir.is_dir():
            copy_with_config(stage.source, stage.init_dir, stage.grown)
            console.print(f"context grows to {stage.grown.train_length} tokens: {stage.init_dir} (same weights and "
                          f"RoPE base; max_position_embeddings {before.max_position_embeddings} -> "
                          f"{stage.grown.max_position_embeddings})")
        result = run_stage(stage_classes[stage.kind], stage.recipe, stage.run_dir, resume=resume, console=console)
        manifest["stages"].append({"name": stage.name, "kind": stage.kind, "run_dir": str(stage.run_dir),
                                   "init": str(stage.init_dir), "seq_len": stage.recipe.data.seq_len,
                                   "context_grown_to": stage.grown.train_length if stage.grown else None,
                                   "step": result.step, "exit_code": result.exit_code,
                                   "final": str(result.final_dir) if result.final_dir else None})
        _write(run_dir, manifest)
        if result.exit_code != 0:
            console.print(f"stage {stage.name} stopped at step {result.step}; continue with --resume")
            return SpecializeResult(run_dir, result.exit_code, manifest)
    manifest["final"] = str(run.stages[-1].final_dir)
    manifest["evaluation"] = measure(run, run_dir, console)
    _write(run_dir, manifest)
    _print_scores(manifest["evaluation"], console)
    console.print(f"specialised model: {manifest['final']} (manifest: {run_dir / MANIFEST})")
    return SpecializeResult(run_dir, 0, manifest)

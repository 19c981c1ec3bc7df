"""`qwen sft RECIPE.toml [--set section.key=value ...] [--out DIR] [--resume] [--json]`."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def sft(
    recipe: Path = typer.Argument(..., help="recipe TOML (e.g. recipes/tiny/sft.toml)"),
    overrides: list[str] = typer.Option([], "--set", help="override a recipe value: section.key=value (repeatable)"),
    out: Path | None = typer.Option(None, "--out", help="run directory (default: runs/<recipe dir name>/sft)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest valid checkpoint in --out"),
    as_json: bool = typer.Option(False, "--json", help="print the final metrics as JSON on stdout"),
) -> int:
    """Fine-tune a pretrained checkpoint on ChatML conversations (loss on assistant replies only).

    Data: JSONL with `messages`, ShareGPT `conversations` or alpaca `instruction/input/output`.
    Optional LoRA ([lora] rank > 0), merged into the saved weights. Same trainer, checkpoints,
    resume and torchrun support as `qwen pretrain`.
    """
    from qwen_cli.recipe import load_recipe
    from qwen_cli.stages.sft import SECTIONS, SFTStage
    from qwen_cli.trainer import run_stage

    parsed = load_recipe(recipe, overrides, sections=SECTIONS)
    run_dir = out if out is not None else Path("runs") / recipe.resolve().parent.name / "sft"
    result = run_stage(SFTStage, parsed, run_dir, resume=resume)
    if as_json and result.exit_code == 0:
        print(json.dumps({"run_dir": str(result.run_dir), "final": str(result.final_dir), "step": result.step,
                          **result.metrics}, indent=2))
    return result.exit_code


def register(app: typer.Typer) -> None:
    """Add ``qwen sft`` to the app."""
    app.command("sft")(sft)

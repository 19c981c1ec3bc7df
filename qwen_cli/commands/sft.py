"""`qwen sft RECIPE.toml [--set section.key=value ...] [--out DIR] [--resume | --overwrite] [--json]`."""

from __future__ import annotations

from pathlib import Path

import typer


def sft(
    recipe: Path = typer.Argument(..., help="recipe TOML (e.g. recipes/tiny/sft.toml)"),
    overrides: list[str] = typer.Option([], "--set", help="override a recipe value: section.key=value (repeatable)"),
    out: Path | None = typer.Option(None, "--out", help="run directory (default: runs/<recipe dir name>/sft)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest valid checkpoint in --out"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the run already in --out (its recipe, "
                                   "metrics, checkpoints and final model) instead of refusing to start"),
    as_json: bool = typer.Option(False, "--json", help="print the final metrics as JSON on stdout"),
) -> int:
    """Fine-tune a pretrained checkpoint on ChatML conversations (loss on assistant replies only).

    Data: JSONL with `messages`, ShareGPT `conversations`, alpaca `instruction/input/output` or ReAct
    tool use `question/steps/final_answer` (observations carry no loss).
    Optional LoRA (\\[lora] rank > 0), merged into the saved weights. Same trainer, checkpoints,
    resume and torchrun support as `qwen pretrain`.
    """
    from qwen_cli.commands.training import run_recipe
    from qwen_cli.stages.sft import SECTIONS, SFTStage

    return run_recipe(SFTStage, SECTIONS, recipe, overrides, out, resume, overwrite, as_json)


def register(app: typer.Typer) -> None:
    """Add ``qwen sft`` to the app."""
    app.command("sft")(sft)

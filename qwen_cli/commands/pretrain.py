"""`qwen pretrain RECIPE.toml [--set section.key=value ...] [--out DIR] [--resume | --overwrite]`."""

from __future__ import annotations

from pathlib import Path

import typer


def pretrain(
    recipe: Path = typer.Argument(..., help="recipe TOML (e.g. recipes/tiny/pretrain.toml)"),
    overrides: list[str] = typer.Option([], "--set", help="override a recipe value: section.key=value (repeatable)"),
    out: Path | None = typer.Option(None, "--out", help="run directory (default: runs/<recipe dir name>/pretrain)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest valid checkpoint in --out"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the run already in --out (its recipe, "
                                   "metrics, checkpoints and final model) instead of refusing to start"),
    as_json: bool = typer.Option(False, "--json", help="print the final metrics as JSON on stdout"),
) -> int:
    """Pretrain a Qwen model on token shards (warm-up + cosine AdamW, checkpoints, exact resume).

    Runs unchanged under `torchrun --nproc-per-node N` (FSDP2). Exit code 130/143 after a
    SIGINT/SIGTERM that saved a checkpoint, 1 when the loss diverges (not finite).
    """
    from qwen_cli.commands.training import run_recipe
    from qwen_cli.stages.pretrain import SECTIONS, PretrainStage

    return run_recipe(PretrainStage, SECTIONS, recipe, overrides, out, resume, overwrite, as_json)


def register(app: typer.Typer) -> None:
    """Add ``qwen pretrain`` to the app."""
    app.command("pretrain")(pretrain)

"""`qwen pretrain RECIPE.toml [--set section.key=value ...] [--out DIR] [--resume]`."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def pretrain(
    recipe: Path = typer.Argument(..., help="recipe TOML (e.g. recipes/tiny/pretrain.toml)"),
    overrides: list[str] = typer.Option([], "--set", help="override a recipe value: section.key=value (repeatable)"),
    out: Path | None = typer.Option(None, "--out", help="run directory (default: runs/<recipe dir name>/pretrain)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest valid checkpoint in --out"),
    as_json: bool = typer.Option(False, "--json", help="print the final metrics as JSON on stdout"),
) -> int:
    """Pretrain a Qwen model on token shards (warm-up + cosine AdamW, checkpoints, exact resume).

    Runs unchanged under `torchrun --nproc-per-node N` (FSDP2). Exit code 130/143 after a
    SIGINT/SIGTERM that saved a checkpoint.
    """
    from qwen_cli.recipe import load_recipe
    from qwen_cli.stages.pretrain import SECTIONS, PretrainStage
    from qwen_cli.trainer import run_stage

    parsed = load_recipe(recipe, overrides, sections=SECTIONS)
    run_dir = out if out is not None else Path("runs") / recipe.resolve().parent.name / "pretrain"
    result = run_stage(PretrainStage, parsed, run_dir, resume=resume)
    if as_json and result.exit_code == 0:
        print(json.dumps({"run_dir": str(result.run_dir), "final": str(result.final_dir), "step": result.step,
                          **result.metrics}, indent=2))
    return result.exit_code


def register(app: typer.Typer) -> None:
    """Add ``qwen pretrain`` to the app."""
    app.command("pretrain")(pretrain)

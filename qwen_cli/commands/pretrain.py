"""`qwen pretrain RECIPE.toml [--set section.key=value ...] [--out DIR] [--resume | --overwrite]`;
`--plan [--gpus N] [--gpu-memory 80GB] [--mfu 0.4] [--gpu-peak-tflops 989]` sizes the run instead."""

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
    as_json: bool = typer.Option(False, "--json", help="print the final metrics (or the --plan) as JSON on stdout"),
    plan: bool = typer.Option(False, "--plan", help="print memory per GPU, steps and days for the recipe "
                              "(model on the meta device: nothing is allocated or trained)"),
    gpus: int = typer.Option(8, "--gpus", help="--plan: number of GPUs"),
    gpu_memory: str = typer.Option("80GB", "--gpu-memory", help="--plan: memory per GPU (80GB, 80GiB; a bare number is GB)"),
    mfu: float = typer.Option(0.4, "--mfu", help="--plan: model FLOPs utilisation to assume"),
    gpu_peak_tflops: float = typer.Option(989.0, "--gpu-peak-tflops", help="--plan: peak TFLOP/s per GPU in the "
                                          "training dtype (989: H100 SXM dense bf16)"),
) -> int:
    """Pretrain a Qwen model on token shards (warm-up + cosine AdamW, checkpoints, exact resume).

    Runs unchanged under `torchrun --nproc-per-node N` (FSDP2). Exit code 130/143 after a
    SIGINT/SIGTERM that saved a checkpoint, 1 when the loss diverges (not finite). With --plan it
    trains nothing: it prints the run's memory per GPU under FSDP2, its steps and its days.
    """
    if plan:
        return print_plan(recipe, overrides, gpus, gpu_memory, mfu, gpu_peak_tflops, as_json)
    from qwen_cli.commands.training import run_recipe
    from qwen_cli.stages.pretrain import SECTIONS, PretrainStage

    return run_recipe(PretrainStage, SECTIONS, recipe, overrides, out, resume, overwrite, as_json)


def print_plan(recipe_path: Path, overrides: list[str], gpus: int, gpu_memory: str, mfu: float,
               peak_tflops: float, as_json: bool) -> int:
    """``--plan``: the recipe's memory per GPU, steps and days on the given cluster, as text or JSON."""
    import json

    from qwen_cli.errors import UserError
    from qwen_cli.recipe import load_recipe
    from qwen_cli.stages.plan import Cluster, parse_bytes, plan, render
    from qwen_cli.stages.pretrain import SECTIONS

    if gpus < 1:
        raise UserError(f"--gpus must be at least 1, got {gpus}")
    if not 0 < mfu <= 1:
        raise UserError(f"--mfu must be in (0, 1], got {mfu}")
    if not peak_tflops > 0:
        raise UserError(f"--gpu-peak-tflops must be positive, got {peak_tflops}")
    cluster = Cluster(gpus, parse_bytes(gpu_memory), mfu, peak_tflops * 1e12)
    result = plan(load_recipe(recipe_path, overrides, sections=SECTIONS), cluster)
    print(json.dumps(result, indent=2) if as_json else render(result))
    return 0


def register(app: typer.Typer) -> None:
    """Add ``qwen pretrain`` to the app."""
    app.command("pretrain")(pretrain)

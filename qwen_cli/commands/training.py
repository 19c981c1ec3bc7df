"""What every training command does: load and check the recipe, train one stage, report the result."""

from __future__ import annotations

import json
from pathlib import Path

from qwen_cli.recipe import load_recipe
from qwen_cli.train.trainer import run_stage


def run_recipe(stage_factory, sections: dict[str, type], recipe_path: Path, overrides: list[str],
               out: Path | None, resume: bool, overwrite: bool, as_json: bool) -> int:
    """Train ``stage_factory``'s stage on the recipe; returns the exit code.

    ``out`` defaults to ``runs/<recipe's directory name>/<stage name>``; a run already there is
    continued with ``resume``, replaced with ``overwrite``, refused otherwise. With ``as_json`` the
    final metrics are printed as one JSON object on stdout.
    """
    recipe = load_recipe(recipe_path, overrides, sections=sections)
    run_dir = out if out is not None else Path("runs") / recipe_path.resolve().parent.name / stage_factory.name
    result = run_stage(stage_factory, recipe, run_dir, resume=resume, overwrite=overwrite)
    if as_json and result.exit_code == 0:
        print(json.dumps({"run_dir": str(result.run_dir), "final": str(result.final_dir), "step": result.step,
                          **result.metrics}, indent=2))
    return result.exit_code

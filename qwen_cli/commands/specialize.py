"""`qwen specialize code|math RECIPE.toml [--set k=v ...] [--out DIR] [--resume | --overwrite] [--json]`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

KINDS = {
    "code": "Code-Qwen (report §4): continued pretraining on decontaminated code at a longer context, "
            "then one or more SFT stages (Code-Qwen-Chat).",
    "math": "Math-Qwen-Chat (report §5): SFT from the base model on decontaminated math Q/A, system and "
            "user turns masked, with a held-out split scored by exact match.",
}


def _command(kind: str):
    def command(
        recipe: Path = typer.Argument(..., help=f"recipe TOML (e.g. recipes/tiny/{kind}.toml)"),
        overrides: list[str] = typer.Option([], "--set", help="override a value: section.key=value, "
                                            "STAGE.section.key=value or defaults.section.key=value (repeatable)"),
        out: Path | None = typer.Option(None, "--out", help=f"run directory (default: runs/<recipe dir name>/{kind})"),
        resume: bool = typer.Option(False, "--resume", help="continue the run in --out: reuse its data, skip "
                                    "finished stages, resume the interrupted one from its newest checkpoint"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace the specialisation already in --out"),
        as_json: bool = typer.Option(False, "--json", help="print the run's manifest as JSON on stdout"),
    ) -> int:
        from qwen_cli.stages.specialize import specialize

        result = specialize(kind, recipe, overrides, out, resume=resume, overwrite=overwrite)
        if as_json and result.exit_code == 0:
            print(json.dumps(result.manifest, indent=2, ensure_ascii=False, default=str))
        return result.exit_code

    command.__doc__ = (f"{KINDS[kind]}\n\nData are built and decontaminated (13-gram overlap with HumanEval, MBPP, "
                       "GSM8K, MATH test items) before training; counts and measurements go to RUN/manifest.json.")
    return command


def register(app: typer.Typer) -> None:
    """Add ``qwen specialize code`` and ``qwen specialize math`` to the app."""
    group = typer.Typer(help="Specialised models of the report: Code-Qwen(-Chat) and Math-Qwen-Chat.",
                        no_args_is_help=True)
    for kind in KINDS:
        group.command(kind)(_command(kind))
    app.add_typer(group, name="specialize")

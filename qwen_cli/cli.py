"""The ``qwen`` command: a Typer app whose subcommands live in ``qwen_cli/commands``.

Each command module exposes ``register(app)``; commands are thin — parse arguments,
load a recipe, call one ``run()`` function. Heavy imports (torch, datasets) happen
inside the command functions so ``qwen --help`` stays instant.
"""

from __future__ import annotations

import importlib
import sys

import click
import typer
from rich.console import Console

from qwen_cli.errors import UserError

COMMAND_MODULES = (
    "tokenize",
    "pretrain",
    "sft",
    "chat",
    "eval",
    "convert",
)

app = typer.Typer(
    name="qwen",
    help="Reproduce the Qwen (v1) model lineage: tokenize, pretrain, sft, eval, chat, convert.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for _name in COMMAND_MODULES:
    importlib.import_module(f"qwen_cli.commands.{_name}").register(app)


def main() -> None:
    """Console-script entry point: runs the app and turns errors into one-line messages."""
    stderr = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        result = app(standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        stderr.print("interrupted")
        sys.exit(130)
    except UserError as exc:
        stderr.print(f"[bold red]error:[/] {exc}", markup=True)
        sys.exit(exc.exit_code)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()

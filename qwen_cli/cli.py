"""The ``qwen`` command: a Typer app whose subcommands live in ``qwen_cli/commands``.

Each command module exposes ``register(app)``; commands are thin — parse arguments,
load a recipe, call one ``run()`` function. Heavy imports (torch, datasets) happen
inside the command functions so ``qwen --help`` stays instant.

Errors never show a traceback: a usage error (unknown command or option, a missing or
invalid value) prints one line, ``error: …`` naming the option and ending with a pointer to
``--help`` (click would print it on a second line), and exits 2; a ``UserError`` prints ``error: …`` and exits with its code. Messages are printed
literally, never read as rich markup (they often hold user paths).
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console
from rich.text import Text

from qwen_cli.commands.help import UntaggedHelpGroup
from qwen_cli.errors import UserError

COMMAND_MODULES = (
    "tokenize",
    "pretrain",
    "sft",
    "rlhf",
    "chat",
    "eval",
    "extend_context",
    "convert",
    "specialize",
)

app = typer.Typer(
    name="qwen",
    cls=UntaggedHelpGroup,
    help="Reproduce the Qwen (v1) model lineage: tokenize, pretrain, sft, rlhf, specialize, extend-context, eval, chat, convert.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for _name in COMMAND_MODULES:
    importlib.import_module(f"qwen_cli.commands.{_name}").register(app)


def _print_version(requested: bool) -> None:
    if requested:
        from importlib.metadata import version

        print(f"qwen {version('qwen-cli')}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="Print the installed version and exit.")) -> None:
    """Options that come before the subcommand."""


def _print_error(console: Console, message: str) -> None:
    """``error: MESSAGE`` on one line, the message printed literally."""
    console.print(Text.assemble(("error:", "bold red"), " ", message))


def _usage_error(console: Console, exc: typer.TyperException) -> None:
    """Typer's parsing errors on one line: the message (it names the option), then where to find help."""
    message = " ".join(exc.format_message().split())
    if not message:  # ``qwen`` or ``qwen tokenize`` alone: typer has printed the help instead
        return
    ctx = getattr(exc, "ctx", None)  # None for some option errors: then the top-level help
    _print_error(console, f"{message} (see '{ctx.command_path if ctx is not None else app.info.name} --help')")


def main() -> None:
    """Console-script entry point: runs the app and turns errors into one-line messages."""
    stderr = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        result = app(standalone_mode=False, prog_name="qwen")
    except typer.TyperException as exc:  # every error typer raises while parsing the command line
        _usage_error(stderr, exc)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        stderr.print("interrupted")
        sys.exit(130)
    except UserError as exc:
        _print_error(stderr, str(exc))
        sys.exit(exc.exit_code)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()

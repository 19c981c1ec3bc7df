"""`qwen chat CKPT [--system TEXT] [--max-new-tokens N] [--temperature T] [--top-p P] [--seed S] [--messages FILE] [--json]
[--verbose] [--quantize int8] [--compile] [--tools python,calculator [--max-steps N] [--file PATH ...]]`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def chat(
    checkpoint: Path = typer.Argument(..., help="model directory (e.g. runs/tiny/sft/final)"),
    system: str | None = typer.Option(None, "--system", help="system prompt (default: the model's chat "
                                         "template's; ChatML: 'You are a helpful assistant.')"),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", min=1, help="longest reply in tokens"),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 = greedy"),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0, help="nucleus sampling threshold"),
    seed: int | None = typer.Option(None, "--seed", help="seed for sampling (reproducible replies)"),
    messages: Path | None = typer.Option(None, "--messages", help="JSON conversation to continue "
                                         "(answered first when it ends with a user turn)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per reply instead of streamed text"),
    verbose: bool = typer.Option(False, "--verbose", help="print time to first token and tokens/s after each "
                                 "reply (--json: as fields time_to_first_token_s, tokens_per_s)"),
    quantize: str = typer.Option("none", "--quantize", help="none | int8 (weight-only int8 linear layers; "
                                 "the checkpoint on disk is not changed)"),
    compile_decode: bool = typer.Option(False, "--compile", help="static KV cache + torch.compile'd decode step "
                                        "(compiles once per process, on the first reply)"),
    tools: str | None = typer.Option(None, "--tools", help="answer by ReAct tool use with these tools, comma-separated "
                                     "(python, calculator); each step is shown"),
    max_steps: int = typer.Option(8, "--max-steps", min=1, help="with --tools: most tool calls per message"),
    files: list[Path] = typer.Option([], "--file", help="with --tools python: a file copied into the Python "
                                     "session's work directory (repeatable)"),
) -> int:
    """Chat with a model: a terminal REPL, or one user message per line when stdin is not a terminal.

    Piped, a line holding only the ASCII record separator (\\x1e) separates replies (--json: one object per reply).
    Commands: /reset, /system TEXT, /save FILE, /exit. Ctrl-C stops a reply and returns to the prompt.
    With --tools, each message is a ReAct episode: steps on stderr (--json: in the object), the reply on stdout.
    """
    if top_p <= 0:  # typer's bounds are inclusive; checked before the slow imports below
        raise typer.BadParameter("must be in (0, 1]", param_hint="'--top-p'")
    from qwen_cli.model.quantize import QUANTIZE_MODES, quantize_model

    if quantize not in QUANTIZE_MODES:
        raise typer.BadParameter(f"must be one of {', '.join(QUANTIZE_MODES)}", param_hint="'--quantize'")
    agent_tools = _tools(tools, files, verbose)
    from rich.console import Console
    from rich.markup import escape

    from qwen_cli.checkpoint import load
    from qwen_cli.inference.chat_session import (
        ChatSession,
        piped_lines,
        read_messages,
        run_loop,
        terminal_lines,
    )

    file_system, history = read_messages(messages) if messages is not None else (None, [])
    model, tokenizer = load(checkpoint)
    session = ChatSession(quantize_model(model, quantize), tokenizer, system or file_system,
                          max_new_tokens, temperature, top_p, seed, compile=compile_decode)
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    interactive = sys.stdin.isatty() and not as_json
    pending = None
    if history and history[-1]["role"] == "user":
        history, pending = history[:-1], history[-1]["content"]
    session.history = history
    if interactive:
        console.print(f"[bold]qwen chat[/] {escape(str(checkpoint))} — commands: /reset /system TEXT /save FILE "
                      "/exit; Ctrl-C stops a reply, Ctrl-D quits")
    lines = terminal_lines(console) if interactive else piped_lines()
    if pending is not None:
        lines = _prepend(pending, lines)
    if agent_tools:
        from qwen_cli.agent.chat import run_tool_loop

        run_tool_loop(session, agent_tools, lines, console, as_json, interactive, max_steps)
    else:
        run_loop(session, lines, console, as_json, interactive, verbose)
    return 0


def _tools(names: str | None, files: list[Path], verbose: bool) -> list:
    """The tools of ``--tools`` (none without it), checked before the model loads."""
    if names is None:
        if files:
            raise typer.BadParameter("needs --tools python", param_hint="'--file'")
        return []
    if verbose:
        raise typer.BadParameter("is not available with --tools", param_hint="'--verbose'")
    from qwen_cli.agent.tools import make_tools

    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        raise typer.BadParameter("name at least one tool (python, calculator)", param_hint="'--tools'")
    return make_tools(wanted, files)


def _prepend(first: str, rest):
    """``first``, then the lines of ``rest`` as they come."""
    yield first
    yield from rest


def register(app: typer.Typer) -> None:
    """Add ``qwen chat`` to the app."""
    app.command("chat")(chat)

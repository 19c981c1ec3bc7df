"""``qwen chat --tools``: every user message is answered by a ReAct episode whose steps are shown.

The conversation (history, system prompt, the slash commands) is the plain chat's
:class:`~qwen_cli.inference.chat_session.ChatSession`; each message runs
:func:`~qwen_cli.agent.react.run_episode` on the same model and settings, and the history keeps
the question and the reply (the final answer, else the model's last text). Text modes print each
step to stderr as it runs (thought, action, input, observation, image paths) and the reply to
stdout, piped replies separated as in plain chat; ``--json`` prints one object per message with
every step. Ctrl-C stops the episode (the Python session is restarted on its next call). A model
whose window cannot hold Qwen's ReAct prompt gets the compact one (``COMPACT_PROMPT``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence

from rich.console import Console
from rich.text import Text

from qwen_cli.agent.react import Completer, Episode, Step, model_completer, run_episode
from qwen_cli.agent.tools import Tool
from qwen_cli.data.react import react_prompt
from qwen_cli.errors import UserError
from qwen_cli.inference.chat_session import ChatSession, run_loop


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def show_step(console: Console, step: Step) -> None:
    """One step on the console; model and tool text printed literally, never as markup."""
    console.print(Text.assemble(("thought: ", "bold cyan"), step.thought))
    console.print(Text.assemble(("action: ", "bold cyan"), step.action))
    console.print(Text.assemble(("action input: ", "bold cyan"), step.action_input))
    observation = step.observation
    if observation is None:
        return
    console.print(Text.assemble(("observation: ", "bold red" if observation.error else "bold green"),
                                observation.text))
    for path in observation.images:
        console.print(Text.assemble(("image: ", "bold magenta"), path))


STOP_NOTES = {"step_limit": "stopped: the step limit was reached before a final answer",
              "unknown_tool": "stopped: the model called a tool that is not available",
              "no_action": "(no tool call and no 'Final Answer:'; the reply is the model's text)"}


def answer(session: ChatSession, complete: Completer, tools: Sequence[Tool], user: str, console: Console,
           as_json: bool, interactive: bool, max_steps: int, compact: bool = False) -> Episode | None:
    """One user message: run the episode (``compact``: with the short ReAct prompt), show it, add the
    exchange to the history (None if interrupted)."""
    try:
        episode = run_episode(complete, user, tools, max_steps, history=session.history, system=session.system,
                              on_step=(lambda _: None) if as_json else (lambda step: show_step(console, step)),
                              compact=compact)
    except KeyboardInterrupt:
        for tool in tools:
            tool.close()
        console.print("[yellow]\\[interrupted][/]")
        return None
    session.history += [{"role": "user", "content": user}, {"role": "assistant", "content": episode.reply}]
    if as_json:
        record = episode.to_json()
        del record["question"]
        _write(json.dumps({"user": user, **record}, ensure_ascii=False) + "\n")
        return episode
    if episode.stop_reason in STOP_NOTES:
        console.print(Text(STOP_NOTES[episode.stop_reason], "yellow"))
    if interactive:
        console.print("[bold blue]qwen>[/] ", end="")
    _write(episode.reply + "\n")
    return episode


def run_tool_loop(session: ChatSession, tools: Sequence[Tool], lines: Iterator[str], console: Console,
                  as_json: bool, interactive: bool, max_steps: int) -> None:
    """Answer each line with tools (or run it as a command) until the lines end or /exit; closes the tools.

    Qwen's ReAct prompt when it fits the model's window, else the compact one (said on the console);
    a ``UserError`` first if even that leaves the model no room to answer."""
    def needed(compact: bool) -> int:
        return len(session.template.prompt([{"role": "user", "content": react_prompt("", tools, compact)}]))

    full = needed(False)
    compact = full >= session.window
    size = needed(True) if compact else full
    if compact and not as_json:
        console.print(Text(f"(Qwen's ReAct prompt takes {full} tokens of the model's {session.window}: "
                           "using the compact prompt)", "yellow"))
    if size >= session.window:
        for tool in tools:
            tool.close()
        raise UserError(f"the ReAct prompt for {', '.join(t.name for t in tools)} takes {size} tokens, the "
                        f"model's whole context is {session.window}: use a model with a longer context")
    complete = model_completer(session.model, session.tokenizer, session.max_new_tokens, session.temperature,
                               session.top_p, session.seed, session.window, session.compile)
    try:
        run_loop(session, lines, console, as_json, interactive, respond=lambda line: answer(
            session, complete, tools, line, console, as_json, interactive, max_steps, compact) is not None)
    finally:
        for tool in tools:
            tool.close()

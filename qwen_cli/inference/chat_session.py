"""The chat loop behind ``qwen chat``: a session with history, streamed replies and slash commands.

A :class:`ChatSession` keeps the conversation, renders it with the model's own chat template when
its tokenizer has one, else ChatML (:func:`~qwen_cli.data.jinja_chat.chat_template_for`), within a
token window (the oldest exchanges are left out first, as Qwen's ``make_context`` does; the window
is the model's ``max_position_embeddings``, leaving room for the reply) and streams the reply
through the tokenizer's stream decoder, so a multi-byte character is never printed in halves. A
reply ends at a stop id (ChatML: ``<|im_end|>`` / ``<|im_start|>`` / ``<|endoftext|>``; a model's
template: ``generation_config.json``'s eos ids and the template's end-of-turn token) or after
``max_new_tokens``; Ctrl-C during a reply stops it, keeps the partial text in the history and
returns to the prompt. Without ``--system`` the system prompt is the template's default (ChatML:
"You are a helpful assistant."; a model's template may have none).

:func:`run_loop` reads user lines from any line source: a rich prompt on a terminal, or one
message per line from piped stdin. Replies stream to stdout, each followed by a newline. Piped,
consecutive replies are separated by a line holding only :data:`REPLY_SEPARATOR` (the ASCII record
separator, invisible on a terminal), so replies that span lines can be split back:
``stdout.split("\\x1e\\n")`` gives each reply with its newline (only a reply that itself holds
that character could break this), and one reply is exactly its text. To know when each reply ends
while it streams, use ``json_lines``: one JSON object per reply. Lines starting with ``/`` are
commands: ``/reset`` (forget the history), ``/system TEXT`` (new system prompt, history reset),
``/save FILE`` (write the conversation as ``{"messages": [...]}``, readable by ``--messages``),
``/exit``. A command that fails (a file that cannot be written) is reported and the session goes
on; user text in command echoes is printed literally, never read as rich markup.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.text import Text

from qwen_cli.data.chat_format import Message, validate
from qwen_cli.data.jinja_chat import chat_template_for
from qwen_cli.errors import UserError
from qwen_cli.fsutil import atomic_file
from qwen_cli.inference.generate import generate

COMMANDS = "/reset  /system TEXT  /save FILE  /exit"
REPLY_SEPARATOR = "\x1e"
"""Piped, the line between two replies holds only this (ASCII RS), so replies can be split back."""


@dataclass
class Reply:
    text: str
    tokens: int
    finish_reason: str  # "stop" (a stop token), "length" (max_new_tokens) or "interrupted" (Ctrl-C)
    first_token_s: float | None = None  # seconds from the request to the first new token (None: no token)
    seconds: float = 0.0  # whole generation, prefill included

    @property
    def tokens_per_s(self) -> float | None:
        """New tokens per second of the whole reply (prefill included)."""
        return self.tokens / self.seconds if self.tokens and self.seconds > 0 else None

    def timing(self) -> dict:
        """The ``--verbose`` numbers: time to first token and tokens/s (rounded for printing)."""
        rate = self.tokens_per_s
        return {"time_to_first_token_s": None if self.first_token_s is None else round(self.first_token_s, 4),
                "tokens_per_s": None if rate is None else round(rate, 2)}


class ChatSession:
    """A conversation with one model: history, generation settings, streaming."""

    def __init__(self, model, tokenizer, system: str | None = None, max_new_tokens: int = 512,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                 window: int | None = None, compile: bool = False) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.template = chat_template_for(tokenizer)
        self.system = system or self.template.default_system
        self.history: list[Message] = []
        self.max_new_tokens, self.temperature, self.top_p, self.seed = max_new_tokens, temperature, top_p, seed
        self.compile = compile  # static-cache compiled decode (see qwen_cli.inference.static_decode)
        self.window = window or model.config.max_position_embeddings
        self.prompt_budget = max(self.window - max_new_tokens, self.window // 2)

    @property
    def messages(self) -> list[Message]:
        """The conversation; no system message when none is set and the model's template has no default."""
        head: list[Message] = [] if self.system is None else [{"role": "system", "content": self.system}]
        return [*head, *self.history]

    def reset(self, system: str | None = None) -> None:
        self.history = []
        if system is not None:
            self.system = system or self.template.default_system

    def reply(self, user: str, on_text: Callable[[str], None] = lambda _: None) -> Reply:
        """Generate the assistant's answer to ``user``, streaming text pieces to ``on_text``."""
        prompt = self.template.prompt([*self.messages, {"role": "user", "content": user}], self.prompt_budget)
        decoder = self.tokenizer.stream_decoder()
        tokens: list[int] = []
        pieces: list[str] = []

        def emit(piece: str) -> None:
            if piece:
                pieces.append(piece)
                on_text(piece)

        def on_token(_: int, token: int) -> None:
            if not tokens:
                timing["first"] = time.perf_counter() - start
            tokens.append(token)
            emit(decoder.add(token))

        seed = None if self.seed is None else self.seed + len(self.history) // 2
        reason = "stop"
        timing: dict[str, float] = {}
        start = time.perf_counter()
        try:
            budget = max(0, min(self.max_new_tokens, self.window - len(prompt)))  # never past the context window
            generate(self.model, [prompt], budget, temperature=self.temperature, top_p=self.top_p,
                     stop_ids=self.template.stop_ids, seed=seed, on_token=on_token, compile=self.compile)
            if len(tokens) >= budget:
                reason = "length"
        except KeyboardInterrupt:
            reason = "interrupted"
        seconds = time.perf_counter() - start
        if reason != "interrupted":  # an interrupted reply keeps whole characters only
            emit(decoder.flush())
        text = "".join(pieces)
        self.history += [{"role": "user", "content": user}, {"role": "assistant", "content": text}]
        return Reply(text, len(tokens), reason, timing.get("first"), seconds)

    def save(self, path: str) -> None:
        """Write the conversation as ``{"messages": [...]}``; a ``UserError`` if that fails."""
        with atomic_file(Path(path)) as handle:
            json.dump({"messages": self.messages}, handle, ensure_ascii=False, indent=2)


def read_messages(path: Path) -> tuple[str | None, list[Message]]:
    """(system prompt or None, turns) from a JSON file: a list of messages or ``{"messages": [...]}``.

    The turns may end with a user message (it is answered first) or an assistant one.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read messages ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    messages = data.get("messages") if isinstance(data, dict) else data
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise UserError(f"{path}: expected a list of {{role, content}} objects or {{\"messages\": [...]}}")
    messages = [{"role": m.get("role"), "content": m.get("content")} for m in messages]
    if any(not isinstance(m["content"], str) for m in messages):
        raise UserError(f"{path}: every message needs a string 'content'")
    closed = messages + ([{"role": "assistant", "content": ""}] if messages and messages[-1]["role"] == "user" else [])
    try:
        validate(closed)
    except ValueError as exc:
        raise UserError(f"{path}: {exc.args[0]}") from None
    if messages[0]["role"] == "system":
        return messages[0]["content"], messages[1:]
    return None, messages


def terminal_lines(console: Console) -> Iterator[str]:
    """User lines typed at a rich prompt; ends at EOF (Ctrl-D)."""
    while True:
        try:
            yield console.input("[bold green]you>[/] ")
        except EOFError:
            console.print()
            return


def piped_lines() -> Iterator[str]:
    for line in sys.stdin:
        yield line.rstrip("\n")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def answer(session: ChatSession, user: str, console: Console, json_lines: bool, interactive: bool,
           verbose: bool = False) -> None:
    """One turn: stream the reply (or print it as JSON) and report an interruption; ``verbose`` adds timing."""
    if interactive:
        console.print("[bold blue]qwen>[/] ", end="")
    reply = session.reply(user, on_text=(lambda _: None) if json_lines else _write)
    if json_lines:
        record = {"user": user, "reply": reply.text, "tokens": reply.tokens, "finish_reason": reply.finish_reason}
        _write(json.dumps({**record, **(reply.timing() if verbose else {})}, ensure_ascii=False) + "\n")
    else:
        _write("\n")
        if verbose:
            timing = reply.timing()
            console.print(f"[dim]{reply.tokens} tokens, time to first token {timing['time_to_first_token_s']} s, "
                          f"{timing['tokens_per_s']} tokens/s[/]")
    if reply.finish_reason == "interrupted":
        console.print("[yellow]\\[interrupted][/]")


def command(session: ChatSession, line: str, console: Console) -> bool:
    """Run a slash command; returns False for /exit. User text is echoed literally, never as markup."""
    name, _, arg = line.partition(" ")
    if name == "/exit":
        return False
    if name == "/reset":
        session.reset()
        console.print("history cleared")
    elif name == "/system":
        session.reset(arg.strip())
        console.print(f"system prompt set, history cleared: {session.system or '(the template default)'}",
                      markup=False)
    elif name == "/save" and arg.strip():
        _save(session, arg.strip(), console)
    else:
        console.print(Text.assemble((f"unknown command {line!r}", "red"), f"; commands: {COMMANDS}"))
    return True


def _save(session: ChatSession, path: str, console: Console) -> None:
    """/save: a file that cannot be written is reported and the conversation goes on."""
    try:
        session.save(path)
    except UserError as exc:
        console.print(Text.assemble(("error:", "bold red"), f" {exc}"))
    else:
        console.print(f"saved {path}", markup=False)


def run_loop(session: ChatSession, lines: Iterator[str], console: Console, json_lines: bool, interactive: bool,
             verbose: bool = False, respond: Callable[[str], bool] | None = None) -> None:
    """Answer each line (or run it as a command) until the lines end or /exit.

    ``respond(line)`` answers one line and says whether it wrote a reply (default: :func:`answer`,
    which always does); piped replies are separated by :data:`REPLY_SEPARATOR`."""
    if respond is None:
        def respond(line: str) -> bool:
            answer(session, line, console, json_lines, interactive, verbose)
            return True
    separate, replied = not (interactive or json_lines), False
    for line in lines:
        if not line.strip():
            continue
        if line.startswith("/"):
            if not command(session, line.strip(), console):
                return
            continue
        if separate and replied:
            _write(f"{REPLY_SEPARATOR}\n")
        replied = respond(line) or replied

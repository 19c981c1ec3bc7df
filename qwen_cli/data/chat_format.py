"""Chat data on disk: JSONL conversations in the native, ShareGPT or alpaca shape, checked and read.

Input shapes (one JSON object per line; other keys are ignored):

* native   ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``
* ShareGPT ``{"conversations": [{"from": "system"|"human"|"gpt", "value": "..."}, ...]}``
  (``user``/``assistant``/``chatgpt``/``bing``/``bard``/``model`` are accepted as aliases)
* alpaca   ``{"instruction": "...", "input": "...", "output": "..."}`` (``input`` optional; a
  non-empty input is appended to the instruction after a blank line; optional ``system``)
* ReAct    ``{"question": "...", "steps": [{"thought", "action", "action_input", "observation"}, ...],
  "final_answer": "..."}`` (tool use, :mod:`qwen_cli.data.react`; observations are not supervised)

A conversation is an optional system message, then user/assistant turns alternating from a
user turn to a final assistant turn. Without a system message the default
``"You are a helpful assistant."`` is used, as Qwen's chat code does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from qwen_cli.data.jsonl import loads_line
from qwen_cli.data.react import from_react
from qwen_cli.errors import UserError

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant",
    "bard": "assistant", "model": "assistant",
}

Message = dict[str, str]


def _text(value, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    return value


def from_alpaca(record: dict) -> list[Message]:
    instruction = _text(record.get("instruction"), "'instruction'")
    extra = _text(record.get("input", ""), "'input'")
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = [{"role": "system", "content": _text(record["system"], "'system'")}] if "system" in record else []
    return messages + [{"role": "user", "content": user},
                       {"role": "assistant", "content": _text(record.get("output"), "'output'")}]


def from_sharegpt(turns) -> list[Message]:
    if not isinstance(turns, list):
        raise ValueError("'conversations' must be a list")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise ValueError(f"conversations[{i}] must be an object")
        speaker = turn.get("from", turn.get("role"))
        if speaker not in SHAREGPT_ROLES:
            raise ValueError(f"conversations[{i}]: unknown speaker {speaker!r}")
        content = turn.get("value", turn.get("content"))
        messages.append({"role": SHAREGPT_ROLES[speaker], "content": _text(content, f"conversations[{i}] value")})
    return messages


def to_messages(record) -> list[Message]:
    """The validated messages of one record in any supported shape (ValueError says what is wrong)."""
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    if "messages" in record:
        raw = record["messages"]
        if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
            raise ValueError("'messages' must be a list of objects")
        messages = [{"role": m.get("role"), "content": _text(m.get("content"), f"messages[{i}] content")}
                    for i, m in enumerate(raw)]
    elif "conversations" in record:
        messages = from_sharegpt(record["conversations"])
    elif "instruction" in record:
        messages = from_alpaca(record)
    elif "steps" in record:
        messages = from_react(record)
    else:
        raise ValueError("no 'messages', 'conversations', 'instruction' or 'steps' key")
    return validate(messages)


def validate(messages: list[Message]) -> list[Message]:
    """Check roles and turn order: [system], user, assistant, user, assistant, ..."""
    for i, m in enumerate(messages):
        if m["role"] not in ROLES:
            raise ValueError(f"message {i}: unknown role {m['role']!r} (expected {', '.join(ROLES)})")
    turns = messages[1:] if messages and messages[0]["role"] == "system" else messages
    if not turns:
        raise ValueError("no user/assistant turns")
    for i, m in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise ValueError(f"turn {i + 1} is {m['role']!r}, expected {expected!r} (turns alternate from user)")
    if turns[-1]["role"] != "assistant":
        raise ValueError("the conversation must end with an assistant turn")
    return messages


def read_chat_jsonl(path: str | Path, on_bad: Literal["error", "skip"] = "error") -> tuple[list[list[Message]], int]:
    """(conversations, number of skipped bad lines). A bad line raises ``UserError('file:line: why')``
    unless ``on_bad == "skip"``; blank lines are ignored."""
    path = Path(path)
    conversations, skipped = [], 0
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read chat data ({exc.strerror})") from None
    with handle:
        try:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    conversations.append(to_messages(loads_line(line)))
                except (ValueError, KeyError) as exc:
                    if on_bad == "error":
                        reason = exc.args[0] if isinstance(exc, ValueError) else f"missing key {exc}"
                        raise UserError(f"{path}:{lineno}: {reason}") from None
                    skipped += 1
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text") from None
    if not conversations:
        raise UserError(f"{path}: no conversations")
    return conversations, skipped

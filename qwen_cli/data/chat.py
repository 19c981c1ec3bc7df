"""Chat data for SFT and chat: JSONL readers, ChatML rendering with loss masks, truncation, packing.

Input shapes (one JSON object per line; other keys are ignored):

* native   ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``
* ShareGPT ``{"conversations": [{"from": "system"|"human"|"gpt", "value": "..."}, ...]}``
  (``user``/``assistant``/``chatgpt``/``bing``/``bard``/``model`` are accepted as aliases)
* alpaca   ``{"instruction": "...", "input": "...", "output": "..."}`` (``input`` optional; a
  non-empty input is appended to the instruction after a blank line; optional ``system``)

A conversation is an optional system message, then user/assistant turns alternating from a
user turn to a final assistant turn. Without a system message the default
``"You are a helpful assistant."`` is used, as Qwen's chat code does.

Rendering (token for token what Qwen's ``make_context`` builds)::

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{q}<|im_end|>\\n<|im_start|>assistant\\n{a}<|im_end|>

The role names, ``\\n`` and message contents are encoded with the ordinary ``encode`` (a
``<|im_end|>`` typed by a user is plain text); ``<|im_start|>``/``<|im_end|>`` are inserted by id.

Loss mask (which tokens are prediction targets): the assistant's content and its closing
``<|im_end|>``. Not supervised: system and user turns, the assistant header
``<|im_start|>assistant\\n`` (the prompt always supplies it) and the ``\\n`` between turns (the
model stops at ``<|im_end|>``, so it never generates them). Qwen's released finetune script
supervises headers and newlines too; learning to emit ``<|im_start|>`` after ``<|im_end|>``
is what users linked to replies that run on into a new turn.

Truncation to ``max_len`` tokens: whole exchanges (a user turn and its answer) are dropped from
the oldest end, keeping the system prompt; if the last exchange alone is still too long, the
sequence is cut at ``max_len``; a conversation left with no supervised token is dropped. Each
case is counted in :class:`ChatStats`.

Batching: ``pack`` places conversations into rows of ``seq_len`` tokens (first fit) with
``segment_ids``, so attention never crosses conversations and positions restart per
conversation; ``pad`` puts one conversation per row, right-padded to the longest in the batch.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from qwen_cli.errors import UserError

DEFAULT_SYSTEM = "You are a helpful assistant."
IGNORE_INDEX = -100
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
    else:
        raise ValueError("no 'messages', 'conversations' or 'instruction' key")
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
                    conversations.append(to_messages(json.loads(line)))
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


@dataclass
class Sample:
    """One rendered conversation: token ids and, per token, whether it is a prediction target."""

    ids: list[int]
    supervised: list[bool]


@dataclass
class ChatStats:
    """What encoding did to the data set (reported by ``qwen sft``)."""

    conversations: int = 0
    tokens: int = 0
    supervised_tokens: int = 0
    truncated_turns: int = 0  # conversations that lost their oldest exchanges
    truncated_tail: int = 0  # conversations cut at max_len inside the last exchange
    dropped: int = 0  # conversations with no supervised token left after truncation
    skipped_lines: int = 0


class ChatTemplate:
    """ChatML rendering for one tokenizer (see the module docstring for the exact layout)."""

    def __init__(self, tokenizer, default_system: str = DEFAULT_SYSTEM) -> None:
        self.tokenizer = tokenizer
        self.default_system = default_system
        self.newline = tokenizer.encode("\n")
        self.role_ids = {role: tokenizer.encode(role) for role in ROLES}
        self.stop_ids = (tokenizer.im_end_id, tokenizer.im_start_id, tokenizer.eot_id)

    def header(self, role: str) -> list[int]:
        """``<|im_start|>{role}\\n``."""
        return [self.tokenizer.im_start_id, *self.role_ids[role], *self.newline]

    def turn(self, message: Message) -> Sample:
        """One ``<|im_start|>{role}\\n{content}<|im_end|>`` block; only assistant content + ``<|im_end|>`` supervised."""
        head = self.header(message["role"])
        body = [*self.tokenizer.encode(message["content"]), self.tokenizer.im_end_id]
        target = message["role"] == "assistant"
        return Sample(head + body, [False] * len(head) + [target] * len(body))

    def _split(self, messages: Sequence[Message]) -> tuple[Message, list[Message]]:
        if messages and messages[0]["role"] == "system":
            return messages[0], list(messages[1:])
        return {"role": "system", "content": self.default_system}, list(messages)

    def _blocks(self, messages: Sequence[Message]) -> tuple[Sample, list[Sample]]:
        """The system turn, then one Sample per exchange (``\\n`` + user turn + ``\\n`` + assistant turn)."""
        system, turns = self._split(messages)
        blocks = []
        for i in range(0, len(turns), 2):
            ids, sup = [], []
            for message in turns[i : i + 2]:
                rendered = self.turn(message)
                ids += self.newline + rendered.ids
                sup += [False] * len(self.newline) + rendered.supervised
            blocks.append(Sample(ids, sup))
        return self.turn(system), blocks

    def render(self, messages: Sequence[Message]) -> Sample:
        """The whole conversation with its loss mask, untruncated."""
        system, blocks = self._blocks(messages)
        return Sample(system.ids + [t for b in blocks for t in b.ids],
                      system.supervised + [s for b in blocks for s in b.supervised])

    def encode(self, messages: Sequence[Message], max_len: int, stats: ChatStats) -> Sample | None:
        """Render and truncate to ``max_len`` by the policy in the module docstring; None if dropped."""
        system, blocks = self._blocks(messages)
        total = len(system.ids) + sum(len(b.ids) for b in blocks)
        if total > max_len and len(blocks) > 1:
            stats.truncated_turns += 1
            while total > max_len and len(blocks) > 1:
                total -= len(blocks.pop(0).ids)
        sample = Sample(system.ids + [t for b in blocks for t in b.ids],
                        system.supervised + [s for b in blocks for s in b.supervised])
        if len(sample.ids) > max_len:
            stats.truncated_tail += 1
            sample = Sample(sample.ids[:max_len], sample.supervised[:max_len])
        if not any(sample.supervised):
            stats.dropped += 1
            return None
        stats.conversations += 1
        stats.tokens += len(sample.ids)
        stats.supervised_tokens += sum(sample.supervised)
        return sample

    def prompt(self, messages: Sequence[Message], max_len: int | None = None) -> list[int]:
        """Generation prompt: the history (ending with a user turn) + ``\\n<|im_start|>assistant\\n``.

        With ``max_len``, the oldest exchanges are left out while the prompt is longer (the
        system prompt and the newest user turn always stay), as Qwen's ``make_context`` does.
        """
        system, turns = self._split(messages)
        if not turns or turns[-1]["role"] != "user":
            raise ValueError("a generation prompt must end with a user turn")
        tail = self.newline + self.turn(turns[-1]).ids + self.newline + self.header("assistant")
        history = [self.newline + self.turn(m).ids for m in turns[:-1]]
        exchanges = [history[i] + history[i + 1] for i in range(0, len(history) - 1, 2)]
        head = self.turn(system).ids
        while max_len is not None and exchanges and len(head) + sum(map(len, exchanges)) + len(tail) > max_len:
            exchanges.pop(0)
        return head + [t for e in exchanges for t in e] + tail


def encode_conversations(template: ChatTemplate, conversations: Iterable[Sequence[Message]],
                         max_len: int, stats: ChatStats) -> list[Sample]:
    """Render and truncate every conversation, counting into ``stats``."""
    samples = (template.encode(c, max_len, stats) for c in conversations)
    return [s for s in samples if s is not None]


def pack(lengths: Sequence[int], seq_len: int, order: Sequence[int], open_rows: int = 64) -> list[list[int]]:
    """Group sample indices (taken in ``order``) into rows of at most ``seq_len`` tokens.

    First fit over the last ``open_rows`` rows still open (a bounded window keeps it linear and
    keeps rows close to the shuffled order); rows are returned in the order they were opened.
    """
    rows: list[list[int]] = []
    room: list[int] = []
    first_open = 0
    for index in order:
        n = lengths[index]
        target = next((r for r in range(first_open, len(rows)) if room[r] >= n), None)
        if target is None:
            rows.append([])
            room.append(seq_len)
            target = len(rows) - 1
            first_open = max(first_open, len(rows) - open_rows)
        rows[target].append(index)
        room[target] -= n
    return rows


def targets_of(sample: Sample) -> list[int]:
    """Next-token targets: position i predicts token i+1 when that token is supervised."""
    ids, sup = sample.ids, sample.supervised
    return [ids[i + 1] if sup[i + 1] else IGNORE_INDEX for i in range(len(ids) - 1)] + [IGNORE_INDEX]


def collate(samples: Sequence[Sample], rows: Sequence[Sequence[int]], width: int,
            pad_id: int = 0, segments: bool = True) -> dict[str, torch.Tensor]:
    """Tensors for ``rows`` (lists of sample indices) right-padded to ``width`` tokens.

    ``input_ids`` and ``labels`` [B, width] (next-token targets, ``IGNORE_INDEX`` where nothing is
    predicted); with ``segments``, ``segment_ids`` numbers the conversations of each row 1, 2, …
    and padding 0, so the model masks attention between them and restarts positions.
    """
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    segment_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for seg, index in enumerate(row, 1):
            sample = samples[index]
            end = start + len(sample.ids)
            ids[r, start:end] = torch.tensor(sample.ids)
            targets[r, start:end] = torch.tensor(targets_of(sample))
            segment_ids[r, start:end] = seg
            start = end
    batch = {"input_ids": ids, "labels": targets}
    if segments:
        batch["segment_ids"] = segment_ids
    return batch


def epoch_rows(samples: Sequence[Sample], seq_len: int, mode: Literal["pack", "pad"], seed: int) -> list[list[int]]:
    """One epoch's rows of sample indices in a seeded shuffled order (packed or one per row)."""
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    if mode == "pad":
        return [[i] for i in order]
    return pack([len(s.ids) for s in samples], seq_len, order)


def padding_fraction(samples: Sequence[Sample], rows: Sequence[Sequence[int]], widths: Sequence[int]) -> float:
    """Share of padding tokens when ``rows`` are laid out with the given per-row widths."""
    real = sum(len(samples[i].ids) for row in rows for i in row)
    total = sum(widths)
    return 1.0 - real / total if total else 0.0

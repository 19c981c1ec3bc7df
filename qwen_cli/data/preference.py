"""Preference pairs (reward model, DPO) and RL prompts: JSONL reading, ChatML encoding, pair batches.

File format, one JSON object per line (TRL's convention)::

    {"prompt": "text" | [messages ending with a user turn], "chosen": "reply", "rejected": "reply"}

PPO prompt files have ``{"prompt": ...}`` lines (other keys, such as a gold ``answer``, are kept).
Lines are read with exact ``file:line`` errors (``datasets``' JSON loader reports neither and
refuses files that mix string and message prompts).

Encoding: the prompt is rendered as a ChatML generation prompt (``...<|im_start|>assistant\\n``) and
each reply follows it as ``reply<|im_end|>``; that closing ``<|im_end|>`` is the *end token* whose
hidden state the reward model reads (report §3.2.1). A pair longer than ``seq_len`` loses its
oldest prompt exchanges, then the left of the prompt; a reply that alone does not fit is cut and
still ends with ``<|im_end|>``. Pair batches stack the chosen rows first, then the rejected rows,
right-padded; ``end_index`` is each row's last real position and ``labels`` mark reply tokens
(for DPO's log-probabilities).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from qwen_cli.data.chat_format import Message, validate
from qwen_cli.data.chat_template import ChatTemplate
from qwen_cli.data.jsonl import read_jsonl_lines
from qwen_cli.errors import UserError


@dataclass
class EncodedPair:
    """Token ids of one comparison: a shared prompt and two replies (each ending with ``<|im_end|>``)."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


@dataclass
class PairStats:
    pairs: int = 0
    truncated: int = 0  # pairs whose prompt or reply was cut to fit seq_len
    identical: int = 0  # pairs dropped because chosen == rejected


def prompt_messages(value, where: str) -> list[Message]:
    """A ``prompt`` field (string or messages ending with a user turn) as validated messages."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        messages = [{"role": m.get("role"), "content": m.get("content")} for m in value]
        if not all(isinstance(m["content"], str) for m in messages):
            raise UserError(f"{where}: every prompt message needs a string 'content'")
        if not messages or messages[-1]["role"] != "user":
            raise UserError(f"{where}: a prompt must end with a user turn")
        try:  # validate wants a closing assistant turn: check the history with a placeholder one
            validate([*messages, {"role": "assistant", "content": ""}])
        except ValueError as exc:
            raise UserError(f"{where}: {exc}") from None
        return messages
    raise UserError(f"{where}: 'prompt' must be a string or a list of messages")


def read_jsonl_records(path: str | Path, required: tuple[str, ...]) -> list[tuple[str, dict]]:
    """``(where, record)`` for every non-blank line of a non-empty file (errors name ``file:line``)."""
    records = read_jsonl_lines(path, required)
    if not records:
        raise UserError(f"{path}: no records")
    return records


def read_pairs(path: str | Path) -> list[tuple[list[Message], str, str]]:
    """``(prompt messages, chosen, rejected)`` of every line of a preference JSONL file."""
    pairs = []
    for where, record in read_jsonl_records(path, ("prompt", "chosen", "rejected")):
        if not isinstance(record["chosen"], str) or not isinstance(record["rejected"], str):
            raise UserError(f"{where}: 'chosen' and 'rejected' must be strings")
        pairs.append((prompt_messages(record["prompt"], where), record["chosen"], record["rejected"]))
    return pairs


def read_prompts(path: str | Path) -> list[tuple[list[Message], dict]]:
    """``(prompt messages, the whole record)`` of every line of a prompt JSONL file (PPO)."""
    return [(prompt_messages(record["prompt"], where), record)
            for where, record in read_jsonl_records(path, ("prompt",))]


def read_gold_questions(path: str | Path, limit: int = 0) -> list[tuple[list[Message], str]]:
    """``(prompt messages, gold answer)`` of the first ``limit`` (0: all) lines of a ``{"prompt", "answer"}``
    JSONL file; every line is checked, also those past ``limit``."""
    questions = [(prompt_messages(record["prompt"], where), str(record["answer"]))
                 for where, record in read_jsonl_records(path, ("prompt", "answer"))]
    return questions[:limit] if limit else questions


def reply_ids(template: ChatTemplate, reply: str) -> list[int]:
    """A reply as the model writes it after the assistant header: ``reply<|im_end|>``."""
    return [*template.tokenizer.encode(reply), template.tokenizer.im_end_id]


def fit(prompt: list[Message], replies: list[list[int]], template: ChatTemplate,
        seq_len: int) -> tuple[list[int], list[list[int]], bool]:
    """(prompt ids, replies) cut so that prompt + the longest reply fits ``seq_len``; and whether anything was cut."""
    longest = max(map(len, replies))
    cut = False
    if longest >= seq_len:  # the reply alone does not fit: keep one prompt token's room, end with <|im_end|>
        room = max(seq_len // 2, 1)
        replies = [r if len(r) <= room else [*r[: room - 1], r[-1]] for r in replies]
        longest, cut = max(map(len, replies)), True
    ids = template.prompt(prompt, max_len=seq_len - longest)
    if len(ids) + longest > seq_len:
        ids, cut = ids[len(ids) + longest - seq_len :], True
    elif len(ids) < len(template.prompt(prompt)):
        cut = True
    return ids, replies, cut


def encode_pairs(template: ChatTemplate, pairs, seq_len: int, stats: PairStats) -> list[EncodedPair]:
    """Encode ``(prompt, chosen, rejected)`` triples to at most ``seq_len`` tokens per side."""
    out = []
    for prompt, chosen, rejected in pairs:
        if chosen == rejected:
            stats.identical += 1
            continue
        ids, (good, bad), cut = fit(prompt, [reply_ids(template, chosen), reply_ids(template, rejected)],
                                    template, seq_len)
        stats.truncated += cut
        stats.pairs += 1
        out.append(EncodedPair(ids, good, bad))
    return out


def pair_batch(pairs: list[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Rows ``[chosen_0..chosen_{B-1}, rejected_0..rejected_{B-1}]``, right-padded with ``pad_id``.

    ``attention_mask`` marks real tokens, ``end_index`` each row's last real position (its
    ``<|im_end|>``), ``labels`` the next-token targets of the reply (-100 elsewhere).
    """
    rows = [p.prompt + p.chosen for p in pairs] + [p.prompt + p.rejected for p in pairs]
    prompt_lengths = [len(p.prompt) for p in pairs] * 2
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for r, (row, start) in enumerate(zip(rows, prompt_lengths, strict=True)):
        input_ids[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = True
        labels[r, start - 1 : len(row) - 1] = torch.tensor(row[start:])  # position t predicts token t + 1
    return {"input_ids": input_ids, "attention_mask": mask, "end_index": mask.sum(1) - 1, "labels": labels}

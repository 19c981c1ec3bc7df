"""The ReAct tool-use benchmark (report Table 6): pick the right tool, fill its input, or call none.

Data: Qwen's ``exam_plugin`` JSON Lines format, one object per line with ``prompt`` (the whole
ReAct prompt: up to five candidate tools and the question) and ``response`` (the reference reply).
A reference reply holding an ``Action:`` line is a *positive* item (a tool is needed), one without
is *negative*. The official positive and negative files can be concatenated into one file
(``cat exam_plugin_v1_react_positive.jsonl exam_plugin_v1_react_negative.jsonl > plugin.jsonl``);
``data/tool_use.jsonl`` is our own small set in the same format.

The model answers each prompt once, as the user turn of a chat; generation stops at
``Observation:`` (nothing is called: the tools are descriptions only). Scores, as Qwen's
evaluation defines them:

- tool selection accuracy (positive items): the reply calls a tool (an ``Action:`` line) and its
  name equals the reference's, ignoring case and surrounding space;
- tool input Rouge-L (positive items): the F-measure of the longest common subsequence of the
  model's and the reference's ``Action Input``, both first normalised to JSON with sorted keys
  (an input that does not parse counts as empty) and cut into the checkpoint's tokenizer tokens;
- false-positive rate (negative items): the share of replies that call a tool anyway.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from qwen_cli.agent.react import parse_reply
from qwen_cli.data.chat_template import DEFAULT_SYSTEM
from qwen_cli.data.jsonl import read_jsonl_lines
from qwen_cli.errors import UserError

PACKAGED = Path(__file__).with_name("data") / "tool_use.jsonl"

@dataclass(frozen=True)
class ToolUseItem:
    """One prompt, its reference reply, and whether that reply calls a tool."""

    prompt: str
    response: str

    @property
    def positive(self) -> bool:
        return parse_call(self.response) is not None


def load_items(path: Path | None = None) -> list[ToolUseItem]:
    """The items of a tool-use file (default: the packaged offline set); a line without ``prompt``/``response`` strings is a
    ``UserError`` naming file and line."""
    path = path or PACKAGED
    items = []
    for where, row in read_jsonl_lines(path, ("prompt", "response")):
        if not isinstance(row["prompt"], str) or not isinstance(row["response"], str):
            raise UserError(f"{where}: 'prompt' and 'response' must be strings")
        items.append(ToolUseItem(row["prompt"], row["response"]))
    if not items:
        raise UserError(f"{path}: no items (empty file)")
    return items


def parse_call(reply: str) -> tuple[str, str] | None:
    """``(tool name, raw input)`` of the first tool call in a ReAct reply (the live loop's parser),
    or None when the reply calls no tool."""
    _, action, action_input, _ = parse_reply(reply)
    return None if action is None else (action, action_input)


def normalise_input(raw: str) -> str:
    """A tool input as canonical JSON (sorted keys, unicode kept); "" when it does not parse.
    Python literals (single quotes, True/None) are accepted as a lenient JSON reader would."""
    try:
        value = json.loads(raw)
    except ValueError:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return ""
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):  # a literal JSON cannot hold (a set, bytes)
        return ""


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence (dynamic programming, one row at a time)."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0
        for j, y in enumerate(b, start=1):
            diagonal, row[j] = row[j], diagonal + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(reference: Sequence, candidate: Sequence) -> float:
    """Rouge-L F-measure: LCS over the harmonic mean of its precision and recall (0 if either
    sequence is empty, as the ``rouge-score`` package has it)."""
    if not reference or not candidate:
        return 0.0
    common = lcs_length(reference, candidate)
    if common == 0:
        return 0.0
    precision, recall = common / len(candidate), common / len(reference)
    return 2 * precision * recall / (precision + recall)


def score_reply(item: ToolUseItem, reply: str, tokenize: Callable[[str], list]) -> dict:
    """The per-item record: the parsed call and its scores (positive items: ``correct_tool``,
    ``rouge_l``; negative items: ``false_positive``)."""
    call = parse_call(reply)
    record = {"positive": item.positive, "called": call is not None,
              "action": call[0] if call else None, "action_input": call[1] if call else None}
    if not item.positive:
        record["false_positive"] = call is not None
        return record
    name, raw = parse_call(item.response)
    record["reference_action"], record["reference_input"] = name, raw
    record["correct_tool"] = call is not None and call[0].lower() == name.lower()
    ours = normalise_input(call[1]) if call else ""
    record["rouge_l"] = rouge_l(tokenize(normalise_input(raw)), tokenize(ours))
    return record


def summarise(records: list[dict]) -> dict:
    """Table 6's three numbers (fractions; None when the file has no item of that kind)."""
    positive = [r for r in records if r["positive"]]
    negative = [r for r in records if not r["positive"]]

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    return {"tool_selection_acc": mean([float(r["correct_tool"]) for r in positive]),
            "tool_input_rouge_l": mean([r["rouge_l"] for r in positive]),
            "false_positive_rate": mean([float(r["false_positive"]) for r in negative]),
            "n_positive": len(positive), "n_negative": len(negative)}


def limit_items(items: list[ToolUseItem], limit: int | None) -> list[ToolUseItem]:
    """The first ``limit`` positive and the first ``limit`` negative items, in file order."""
    if limit is None:
        return items
    kept = {id(i) for kind in (True, False) for i in [i for i in items if i.positive == kind][:limit]}
    return [i for i in items if id(i) in kept]


def run_tool_use(complete: Callable[[list[dict], str], str], items: list[ToolUseItem],
                 tokenize: Callable[[str], list], advance: Callable[[], None] = lambda: None) -> tuple[dict, list]:
    """Ask every item once (``complete``: see ``qwen_cli.agent.react``); (Table 6 scores, per-item records)."""
    records = []
    for index, item in enumerate(items):
        messages = [{"role": "system", "content": DEFAULT_SYSTEM}, {"role": "user", "content": item.prompt}]
        reply = complete(messages, "")
        records.append({"doc_id": index, "prompt": item.prompt, "target": item.response, "output": reply,
                        **score_reply(item, reply, tokenize)})
        advance()
    return summarise(records), records

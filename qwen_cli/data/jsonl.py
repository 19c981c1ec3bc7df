"""JSON Lines files (``.jsonl`` or ``.jsonl.gz``) read with errors that name the file and line.

Data files are untrusted: a line nested deeper than :data:`MAX_DEPTH` arrays/objects is refused
before it is parsed (Python's parser would raise ``RecursionError`` near 1,000 levels, and code
walking a parsed row could too). :func:`loads_line` is that bounded ``json.loads`` for any reader
of JSON lines.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

from qwen_cli.errors import UserError

MAX_DEPTH = 64  # nesting levels of arrays/objects one line may have
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def too_deep(line: str) -> bool:
    """Whether arrays/objects in the JSON text ``line`` nest deeper than :data:`MAX_DEPTH` (brackets
    inside strings do not count)."""
    if line.count("[") + line.count("{") <= MAX_DEPTH:  # the common case: cannot be too deep
        return False
    depth = 0
    for bracket in _BRACKET.findall(_STRING.sub("", line)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_DEPTH:
            return True
    return False


def loads_line(line: str) -> object:
    """``json.loads(line)``; a line nested deeper than :data:`MAX_DEPTH` is a ``ValueError`` (and
    malformed JSON the usual ``json.JSONDecodeError``, a ``ValueError`` too)."""
    if too_deep(line):
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    return json.loads(line)


def read_jsonl_lines(path: str | Path, required: tuple[str, ...] = ()) -> list[tuple[str, dict]]:
    """``("file:line", row)`` for every non-blank line; a line that is not a JSON object, nests deeper
    than :data:`MAX_DEPTH` or lacks a ``required`` field is a ``UserError`` naming file and line."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    where = f"{path}:{number}"
                    rows.append((where, _row(line, required, where)))
    except (OSError, EOFError) as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    return rows


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> list[dict]:
    """The rows of :func:`read_jsonl_lines`."""
    return [row for _, row in read_jsonl_lines(path, required)]


def _row(line: str, required: tuple[str, ...], where: str) -> dict:
    try:
        row = loads_line(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not a JSON object ({exc.msg})") from None
    except ValueError as exc:
        raise UserError(f"{where}: not a JSON object ({exc})") from None
    if not isinstance(row, dict):
        raise UserError(f"{where}: not a JSON object (got {type(row).__name__})")
    missing = [name for name in required if name not in row]
    if missing:
        raise UserError(f"{where}: missing field {', '.join(map(repr, missing))}")
    return row

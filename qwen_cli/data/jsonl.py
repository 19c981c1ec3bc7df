"""JSON Lines files (``.jsonl`` or ``.jsonl.gz``) read with errors that name the file and line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from qwen_cli.errors import UserError


def read_jsonl_lines(path: str | Path, required: tuple[str, ...] = ()) -> list[tuple[str, dict]]:
    """``("file:line", row)`` for every non-blank line; a line that is not a JSON object or lacks a
    ``required`` field is a ``UserError`` naming file and line."""
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
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not a JSON object ({exc.msg})") from None
    if not isinstance(row, dict):
        raise UserError(f"{where}: not a JSON object (got {type(row).__name__})")
    missing = [name for name in required if name not in row]
    if missing:
        raise UserError(f"{where}: missing field {', '.join(map(repr, missing))}")
    return row

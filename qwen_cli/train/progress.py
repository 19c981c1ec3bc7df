"""Run progress on the console and in ``metrics.jsonl`` — written by rank 0 only.

:class:`RunProgress` shows a rich progress bar with ETA and a live line of metrics when stderr
is a terminal, and prints one plain line per logged step otherwise (logs, CI, pipes).
:class:`MetricsWriter` appends one JSON object per logged step to ``metrics.jsonl``; on resume
it first drops records past the resumed step, so the file reads as one uninterrupted run. The
file is strict JSON: a NaN or infinite number is written as ``null``. A line that cannot be
written (a full disk) is removed again and the run stops with one ``WriteError`` line (exit 2).
Both are no-ops on ranks other than 0, so callers need no ``if rank == 0`` around them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column

from qwen_cli.fsutil import WriteError, atomic_file

FORMATS = {"lr": "{:.2e}", "grad_norm": "{:.3f}", "tok_per_s": "{:,.0f}", "mfu": "{:.1%}"}


def format_metrics(metrics: Mapping[str, float], keys: tuple[str, ...] | None = None) -> str:
    """``loss 3.412  lr 3.00e-04  …`` for the given keys (all numeric ones when ``keys`` is None)."""
    keys = keys or tuple(k for k, v in metrics.items() if isinstance(v, (int, float)) and k != "step")
    parts = []
    for key in keys:
        value = metrics.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        fmt = FORMATS.get(key, "{:.4f}" if isinstance(value, float) else "{}")
        parts.append(f"{key} {fmt.format(value)}")
    return "  ".join(parts)


def _finite_or_none(value: object) -> object:
    """``None`` (JSON ``null``) for a NaN or infinite float, any other value as it is."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


class MetricsWriter:
    """Append-only ``metrics.jsonl`` (one object per line, flushed per record)."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._handle = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            self._truncate_after(resume_step)
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        try:
            self._handle = open(self.path, "ab")
        except OSError as exc:
            raise WriteError(self.path, exc.strerror or str(exc)) from None

    def _truncate_after(self, step: int) -> None:
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if record.get("step", 0) <= step:
                kept.append(line)
        with atomic_file(self.path) as handle:
            handle.write("".join(line + "\n" for line in kept))

    def write(self, record: Mapping) -> None:
        """Append one line; a failed write (a full disk) is cut off again and raised as ``WriteError``."""
        if self._handle is None:
            return
        finite = {key: _finite_or_none(value) for key, value in record.items()}
        line = (json.dumps(finite, allow_nan=False, default=float) + "\n").encode("utf-8")
        start = self._handle.tell()
        try:
            self._handle.write(line)
            self._handle.flush()
        except OSError as exc:
            handle, self._handle = self._handle, None
            with contextlib.suppress(OSError):
                handle.close()  # may flush part of the line again: cut off below
            with contextlib.suppress(OSError):
                os.truncate(self.path, start)  # no half line for the next run to append to
            raise WriteError(self.path, exc.strerror or str(exc)) from None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class RunProgress:
    """A progress bar over ``total`` steps with a live metrics line; plain lines when not a TTY."""

    def __init__(self, total: int, description: str, enabled: bool = True, mode: str = "auto",
                 console: Console | None = None, start: int = 0,
                 live_keys: tuple[str, ...] = ("loss", "lr", "grad_norm", "tok_per_s", "mfu")) -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.enabled = enabled and mode != "none"
        self.rich = self.enabled and (mode == "rich" or (mode == "auto" and self.console.is_terminal))
        self.total, self.description, self.live_keys = total, description, live_keys
        self._progress: Progress | None = None
        if self.rich:
            # in a narrow terminal the metrics give way (cut with "…"), never the bar, step or ETA
            fixed = Column(no_wrap=True)
            self._progress = Progress(
                TextColumn("[bold]{task.description}", table_column=fixed), BarColumn(20, table_column=fixed),
                MofNCompleteColumn(table_column=fixed), TimeElapsedColumn(table_column=fixed), TextColumn("eta"),
                TimeRemainingColumn(table_column=fixed),
                TextColumn("{task.fields[metrics]}", table_column=Column(no_wrap=True, overflow="ellipsis",
                                                                         ratio=1, min_width=0)),
                console=self.console, transient=False, expand=True,
            )
            self._task = self._progress.add_task(description, total=total, completed=start, metrics="")

    def __enter__(self) -> RunProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, step: int, metrics: Mapping[str, float] | None = None, log: bool = True) -> None:
        """Advance to ``step`` and refresh the live line; plain mode prints a line only when ``log``."""
        if not self.enabled:
            return
        line = format_metrics(metrics, self.live_keys) if metrics else None
        if self._progress is not None:
            fields = {"metrics": line} if line is not None else {}
            self._progress.update(self._task, completed=step, **fields)
        elif line is not None and log:
            self.console.print(f"{self.description} {step}/{self.total}  {line}", soft_wrap=True)  # one record a line

    def print(self, message: str) -> None:
        """A message above the bar (validation results, checkpoint notices)."""
        if self.enabled:
            self.console.print(message)

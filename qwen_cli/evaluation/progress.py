"""Progress of ``qwen eval`` on stderr: one rich bar with ETA per task and phase, and warnings.

The lm-eval model class advances a bar per scored or generated request, the code tasks' sandbox
filter one per executed program. Bars are drawn only while the object is entered (``with``) and
its console (stderr by default) is a terminal; otherwise they cost nothing. Warnings always print,
one line each, above the bars when those are drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from qwen_cli import terminal


class EvalProgress:
    """Per-task progress bars (``bars``) and one-line warnings (``warn``) on one console."""

    def __init__(self, console: Console | None = None, enabled: bool | None = None) -> None:
        self.console = console or terminal.console(stderr=True)
        enabled = self.console.is_terminal if enabled is None else enabled
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                  console=self.console, disable=not enabled)

    def __deepcopy__(self, memo: dict) -> EvalProgress:
        return self  # one shared display: lm-eval deep-copies the task configs that hold it

    def __enter__(self) -> EvalProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._progress.stop()

    @contextmanager
    def bars(self, totals: Mapping[str, int], phase: str) -> Iterator[Callable[[str], None]]:
        """A bar "<label> <phase>" per label of ``totals``; yields ``advance(label)`` (thread-safe)."""
        ids = {label: self._progress.add_task(f"{label} {phase}", total=total) for label, total in totals.items()}
        try:
            yield lambda label: self._progress.advance(ids[label])
        finally:
            for task_id in ids.values():
                self._progress.stop_task(task_id)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning[/] {escape(message)}", soft_wrap=True)

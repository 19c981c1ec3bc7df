"""Printing for terminals and pipes: a terminal gets rich output at its width; a pipe is never
hard-wrapped, so each record stays on one line with its full paths and names (``grep`` finds it).

:func:`console` is the console commands print through: soft wrap (a long line is left whole for the
terminal to fold, never cut in two) and no highlighting. :func:`print_table` draws a table at the
terminal's width or, piped, at the table's natural width, its title on a line of its own, so no
cell is cut ("hellasw…") or folded onto a second line. :func:`progress_bar` is one bar with ETA,
drawn only on a terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.segment import Segments
from rich.table import Table

UNBOUNDED = 1 << 16  # columns: "no limit" when measuring a table's natural width


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr) that never hard-wraps what it prints."""
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def print_table(target: Console, table: Table) -> None:
    """``table`` at the terminal's width, or at its natural width when ``target`` is not a terminal."""
    if target.is_terminal:
        target.print(table)
        return
    natural = Measurement.get(target, target.options.update_width(UNBOUNDED), table).maximum
    title, table.title = table.title, None
    if title:
        target.print(title, soft_wrap=True)
    drawn = target.render(table, target.options.update_width(max(natural, target.width)))
    target.print(Segments(drawn), soft_wrap=True)
    table.title = title


@contextmanager
def progress_bar(target: Console, description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A bar with count, elapsed time and ETA on ``target`` while the block runs (nothing when it is not a
    terminal); yields ``advance(n)``."""
    columns = (TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    with Progress(*columns, console=target, transient=True, disable=not target.is_terminal) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)

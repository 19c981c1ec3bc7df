"""One-shot programs (HumanEval/MBPP completion + tests): each runs as the single cell of its own
sandbox session, and passes when it finishes in time without an exception (``SystemExit(0)``
included), as in the reference harness."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from qwen_cli.sandbox.limits import Limits
from qwen_cli.sandbox.session import Session


@dataclass(frozen=True)
class Outcome:
    """What happened to one program: ``passed`` is True only for a clean finish in time."""

    passed: bool
    status: str  # passed | failed | timeout | killed[:<SIGNAL>|:memory]
    detail: str  # the exception's last line, the exit status or the limit hit, for the report
    wall_s: float


def run_program(source: str, limits: Limits = Limits()) -> Outcome:
    """Run one Python program in a fresh sandbox and report whether it finished cleanly in time."""
    start = time.monotonic()
    with Session(limits) as session:
        result = session.run(source, timeout_s=limits.wall_s, interrupt=False)
    wall = time.monotonic() - start
    if result.ok:
        return Outcome(True, "passed", "", wall)
    if result.status == "timeout":
        return Outcome(False, "timeout", f"wall-clock limit {limits.wall_s:g}s exceeded", wall)
    status = "failed" if result.status in ("error", "exit", "died") else result.status
    return Outcome(False, status, result.error.splitlines()[-1] if result.error else status, wall)


def run_programs(sources: Sequence[str], limits: Limits = Limits(), workers: int | None = None,
                 on_done: Callable[[], None] | None = None) -> list[Outcome]:
    """Run many programs in parallel (one sandbox each, ``workers`` at a time; default: all cores)."""
    workers = workers or os.cpu_count() or 1

    def one(source: str) -> Outcome:
        outcome = run_program(source, limits)
        if on_done is not None:
            on_done()
        return outcome

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, sources))

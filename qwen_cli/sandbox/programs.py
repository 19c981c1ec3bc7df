"""One-shot programs (HumanEval/MBPP completion + tests): each runs as the only process of its own
sandbox, and passes when that process exits with status 0 in time: the host reads the exit status,
the signal and the time itself, and nothing the program writes anywhere is taken as a verdict (a
program decides its own exit status, ``sys.exit(0)`` or ``os._exit(0)`` included, and nothing else)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from qwen_cli.sandbox.box import Box
from qwen_cli.sandbox.limits import Limits
from qwen_cli.sandbox.session import describe_end


@dataclass(frozen=True)
class Outcome:
    """What happened to one program: ``passed`` is True only for a clean finish in time."""

    passed: bool
    status: str  # passed | failed | timeout | killed[:<SIGNAL>|:memory]
    detail: str  # the exception's last line, the exit status or the limit hit, for the report
    wall_s: float


def run_program(source: str, limits: Limits = Limits()) -> Outcome:
    """Run one Python program in a fresh sandbox and report whether it exited 0 in time."""
    start = time.monotonic()
    box = Box(limits, program=source)
    code, memory = box.close(wait_s=max(0.0, start + limits.wall_s - time.monotonic()))
    wall = time.monotonic() - start
    if code == 0 and not memory:
        return Outcome(True, "passed", "", wall)
    if code is None and not memory:
        return Outcome(False, "timeout", f"wall-clock limit {limits.wall_s:g}s exceeded", wall)
    status, reason = describe_end(code, memory, limits)
    last = box.stderr_tail()[-300:]
    if status == "died":
        return Outcome(False, "failed", f"exit status {code}" + (f": {last}" if last else ""), wall)
    return Outcome(False, status, reason, wall)


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

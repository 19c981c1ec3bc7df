"""A polled memory bound for sandboxes that get no memory cgroup (an ordinary user, usually).

Every 50 ms it adds up the proportional set size of every process in the sandbox's PID namespace
(read through the sandbox's own ``/proc``, so exactly its processes) and the bytes held by its
private tmpfs mounts, and kills the sandbox once the sum passes the cap. Weaker than a cgroup: a
fast allocation can overshoot for one interval, by at most the per-process address-space limit.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from qwen_cli.sandbox.host import PRIVATE_TMPFS

INTERVAL_S = 0.05


def sandbox_memory(init_pid: int) -> int:
    """Bytes used now by the sandbox whose PID 1 is ``init_pid`` (on the host)."""
    root = Path(f"/proc/{init_pid}/root")
    total = 0
    for proc in (root / "proc").glob("[0-9]*"):
        try:
            for line in (proc / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except (OSError, ValueError):
            continue
    for mount in PRIVATE_TMPFS:
        try:
            usage = os.statvfs(f"{root}{mount}")
        except OSError:
            continue
        total += (usage.f_blocks - usage.f_bfree) * usage.f_frsize
    return total


class Watchdog(threading.Thread):
    """Kills the sandbox (``kill()``) when its memory passes ``limit``; ``tripped`` says it did."""

    def __init__(self, init_pid: int, limit: int, kill: Callable[[], None]) -> None:
        super().__init__(daemon=True, name=f"sandbox-watchdog-{init_pid}")
        self.init_pid, self.limit, self.kill = init_pid, limit, kill
        self.tripped = False
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(INTERVAL_S):
            if sandbox_memory(self.init_pid) > self.limit:
                self.tripped = True
                self.kill()
                return

    def stop(self) -> None:
        self._done.set()

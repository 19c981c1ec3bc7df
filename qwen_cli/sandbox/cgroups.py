"""Per-sandbox control groups: one memory cap for the whole sandbox (every process it forks and the
pages of its tmpfs mounts) and one process cap, from cgroup v2 where the memory and pids
controllers can be had here, else from cgroup v1.

``hierarchy()`` finds, once per process, where this user may create groups: under cgroup v2 a
group whose ``subtree_control`` has (or accepts) ``memory`` and ``pids``, starting beside our own
group (v2 forbids children of a group that holds processes, the root excepted) and walking up;
under v1 our own group in the ``memory`` and ``pids`` hierarchies. It proves the place by
creating and removing a group. ``Cgroup.create`` makes one sandbox's group(s) and writes the
limits; ``add`` moves the sandbox's first process in before it may fork; ``remove`` kills what is
left and removes the group(s).
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "qwen-sandbox"
CONTROLLERS = ("memory", "pids")
_names = itertools.count()


@dataclass(frozen=True)
class Hierarchy:
    """Where sandbox groups go: v2, one parent for both controllers; v1, (memory, pids) parents."""

    version: int
    parents: tuple[Path, ...]


def _mounts() -> list[tuple[str, Path, set[str], str]]:
    """(fstype, mount point, super options, mount root) of every cgroup mount."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        dash = fields.index("-")
        fstype, options = fields[dash + 1], set(fields[dash + 3].split(","))
        if fstype in ("cgroup", "cgroup2"):
            found.append((fstype, Path(fields[4]), options, fields[3]))
    return found


def _own_groups() -> dict[str, str]:
    """Our group per v1 controller, and under "" the v2 one (/proc/self/cgroup)."""
    groups = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            groups[name] = path
    return groups


def _under(mount: Path, root: str, path: str) -> Path:
    relative = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
    return (mount / relative).resolve() if relative != "." else mount


def _probe(parents: tuple[Path, ...]) -> bool:
    probes = [parent / f"{PREFIX}-probe-{os.getpid()}" for parent in parents]
    try:
        for probe in probes:
            probe.mkdir()
        return True
    except OSError:
        return False
    finally:
        for probe in probes:
            try:
                probe.rmdir()
            except OSError:
                pass


def _v2_parent(mount: Path, root: str, own: str) -> Path | None:
    start = _under(mount, root, own)
    for parent in [start, *start.parents]:
        if not parent.is_relative_to(mount):
            break
        try:
            if not set(CONTROLLERS) <= set((parent / "cgroup.controllers").read_text().split()):
                continue
            if not set(CONTROLLERS) <= set((parent / "cgroup.subtree_control").read_text().split()):
                (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in CONTROLLERS))
        except OSError:  # not ours, or a group holding processes
            continue
        if _probe((parent,)):
            return parent
    return None


@functools.lru_cache(maxsize=1)
def hierarchy() -> tuple[Hierarchy | None, str]:
    """Where this process can make sandbox groups, or None and the reason it cannot."""
    try:
        mounts, own = _mounts(), _own_groups()
    except OSError as exc:
        return None, f"cannot read /proc ({exc})"
    for fstype, mount, _, root in mounts:
        if fstype == "cgroup2" and "" in own:
            parent = _v2_parent(mount, root, own[""])
            if parent is not None:
                return Hierarchy(2, (parent,)), ""
    v1 = {}
    for fstype, mount, options, root in mounts:
        for controller in CONTROLLERS:
            if fstype == "cgroup" and controller in options and controller in own:
                v1[controller] = _under(mount, root, own[controller])
    if len(v1) == len(CONTROLLERS):
        parents = tuple(v1[c] for c in CONTROLLERS)
        if _probe(parents):
            return Hierarchy(1, parents), ""
    return None, "no cgroup (v2 or v1) with memory and pids controllers that this user may create groups in"


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


class Cgroup:
    """One sandbox's group(s), with its memory and process limits written."""

    def __init__(self, where: Hierarchy, memory_bytes: int, processes: int) -> None:
        name = f"{PREFIX}-{os.getpid()}-{next(_names)}"
        self.version = where.version
        self.dirs = [parent / name for parent in where.parents]
        try:
            for directory in self.dirs:
                directory.mkdir()
            if where.version == 2:
                _write(self.dirs[0] / "memory.max", str(memory_bytes))
                if (self.dirs[0] / "memory.swap.max").exists():
                    _write(self.dirs[0] / "memory.swap.max", "0")
                _write(self.dirs[0] / "pids.max", str(processes))
            else:
                memory, pids = self.dirs
                _write(memory / "memory.limit_in_bytes", str(memory_bytes))
                if (memory / "memory.memsw.limit_in_bytes").exists():
                    _write(memory / "memory.memsw.limit_in_bytes", str(memory_bytes))  # no swap either
                _write(pids / "pids.max", str(processes))
        except OSError:
            self.remove()
            raise

    def add(self, pid: int) -> None:
        """Move process ``pid`` (not yet forked) into the group(s)."""
        for directory in self.dirs:
            _write(directory / "cgroup.procs", str(pid))

    def oom_kills(self) -> int:
        """How many processes the memory cap has killed."""
        events = self.dirs[0] / ("memory.events" if self.version == 2 else "memory.oom_control")
        try:
            for line in events.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except OSError:
            pass
        return 0

    def _pids(self) -> list[int]:
        pids: set[int] = set()
        for directory in self.dirs:
            try:
                pids.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return sorted(pids)

    def remove(self) -> None:
        """Kill whatever is still in the group(s), then remove them."""
        deadline = time.monotonic() + 5
        while (pids := self._pids()) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        for directory in self.dirs:
            while True:
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.01)

"""Run untrusted Python programs (HumanEval/MBPP completions + their tests) in a sandbox.

Each program runs in its own process group (own session), started through ``unshare`` when the OS
lets this user create namespaces:

* a new **network** namespace (only a downed loopback: no connection leaves the sandbox, not even
  to the evaluator's own localhost ports);
* a new **PID** namespace with its own ``/proc`` (the program sees neither the evaluator nor its
  environment through ``/proc``; when the program's first process ends or is killed, the kernel
  kills everything it forked);
* a new **mount** namespace in which fresh, size-capped tmpfs mounts hide ``/tmp``, ``/var/tmp`` and
  ``/dev/shm``; the throwaway working directory lives there.

When the evaluator runs as root the program drops to user ``nobody`` (uid/gid 65534), so it can
write nothing the system's permissions do not grant to nobody. Resource limits (``setrlimit``):
CPU seconds (``RLIMIT_CPU``), address space (``RLIMIT_AS``), file size (``RLIMIT_FSIZE``, which also
caps stdout/stderr: they go to files), process count (``RLIMIT_NPROC``: per user, so for a non-root
evaluator the cap is "processes this user runs now + ``limits.processes``", which bounds a fork
bomb while the evaluator, whose own limit is untouched, keeps forking) and no core dumps. The
evaluator enforces a wall-clock timeout by killing the whole process group. The environment is
rebuilt from scratch (PATH, LANG, HOME/TMPDIR = the work dir): no variable of the evaluator leaks.

Fallback when ``unshare`` is refused (non-root without user namespaces): the rlimits, process
group, stripped environment and a temporary working directory still apply; network access and
writes to the user's own files are then NOT prevented, and ``isolation()`` says so.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

CHILD = Path(__file__).with_name("sandbox_child.py")
NOBODY = 65534
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
NAMESPACE_FLAGS = ["--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]
TAIL_BYTES = 2000


@dataclass(frozen=True)
class Limits:
    """Per-program resource limits."""

    wall_s: float = 10.0
    cpu_s: int = 10
    memory_bytes: int = 1 << 30
    file_bytes: int = 16 << 20
    processes: int = 32


@dataclass(frozen=True)
class Outcome:
    """What happened to one program: ``passed`` is True only for a clean exit 0 in time."""

    passed: bool
    status: str  # passed | failed | timeout | killed[:<SIGNAL>]
    detail: str  # last line of stderr (or the signal), for the report
    wall_s: float


@functools.lru_cache(maxsize=1)
def namespace_prefix() -> tuple[str, ...]:
    """The ``unshare`` command line that works for this user, or () when namespaces are refused."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    candidates = [[unshare, *NAMESPACE_FLAGS]]
    if os.geteuid() != 0:
        candidates = [[unshare, "--user", "--map-root-user", *NAMESPACE_FLAGS]]
    for prefix in candidates:
        try:
            probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return tuple(prefix)
    return ()


def isolation() -> str:
    """One line describing the isolation actually in force (for reports and the JSON output)."""
    parts = ["process group", "rlimits (cpu, memory, file size, processes)", "clean environment"]
    if namespace_prefix():
        parts.insert(0, "network+pid+mount namespaces, private /tmp")
    else:
        parts.append("NO network/filesystem isolation (unshare refused)")
    if program_interpreter()[1] >= 0:
        parts.append("uid nobody")
    return ", ".join(parts)


def _world_usable(path: str) -> bool:
    """True when any user (nobody included) can reach and execute ``path``."""
    real = Path(os.path.realpath(path))
    try:
        if not real.stat().st_mode & stat.S_IXOTH:
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in real.parents)
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def program_interpreter() -> tuple[str, int]:
    """``(python, uid)``: the interpreter for programs and the uid to drop to (-1: stay).

    As root, programs run as ``nobody`` under an interpreter nobody may execute (ours, else the
    system's python3); if there is none they stay root, still inside the namespaces.
    """
    if os.geteuid() != 0:
        return sys.executable, -1
    for python in (sys.executable, shutil.which("python3", path=SAFE_PATH)):
        if python and _world_usable(python):
            return python, NOBODY
    return sys.executable, -1


def _user_process_count() -> int:
    uid = str(os.getuid())
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("Uid:"):
                    count += line.split()[1] == uid
                    break
        except OSError:
            continue
    return count


def _nproc_limit(limits: Limits) -> int:
    if program_interpreter()[1] >= 0:
        return limits.processes  # the program runs as nobody, which runs nothing else
    return _user_process_count() + limits.processes


def _tail(path: Path) -> str:
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - TAIL_BYTES))
        return handle.read().decode("utf-8", "replace")


def run_program(source: str, limits: Limits = Limits()) -> Outcome:
    """Run one Python program under the sandbox and report whether it exited 0 in time."""
    scratch = Path(tempfile.mkdtemp(prefix="qwen-sandbox-"))
    try:
        work = scratch / "work"
        work.mkdir()
        (scratch / "prog.py").write_text(source)
        env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": str(work),
               "TMPDIR": str(work), "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONIOENCODING": "utf-8"}
        prefix = namespace_prefix()
        python, uid = program_interpreter()
        argv = [*prefix, sys.executable, "-I", str(CHILD), str(scratch / "prog.py"), str(work),
                "1" if prefix else "0", str(limits.cpu_s), str(limits.memory_bytes),
                str(limits.file_bytes), str(_nproc_limit(limits)), str(uid), python]
        out_path, err_path = scratch / "stdout", scratch / "stderr"
        start = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(argv, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, start_new_session=True)
            try:
                proc.wait(timeout=limits.wall_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            # the program may have left children behind even after a clean exit: kill the group
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            code = proc.wait()
        wall = time.monotonic() - start
        stderr = _tail(err_path).strip()
        last = stderr.splitlines()[-1] if stderr else ""
        if last.startswith("unshare:"):  # unshare could not re-raise the signal that killed its child
            return Outcome(False, "killed", "killed by a signal (CPU-time or another limit)", wall)
        if timed_out:
            return Outcome(False, "timeout", f"wall-clock limit {limits.wall_s:g}s exceeded", wall)
        if code < 0 or code > 128:
            signum = -code if code < 0 else code - 128
            name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
            return Outcome(False, f"killed:{name}", last or f"killed by {name}", wall)
        if code != 0:
            return Outcome(False, "failed", last or f"exit status {code}", wall)
        return Outcome(True, "passed", "", wall)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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

"""One sandbox: the kernel process (``kernel.py``) started under bubblewrap, in its own cgroup.

Start-up: bubblewrap builds the namespaces and mounts, reports the host PID of the sandbox's PID 1
on ``--info-fd`` and waits on ``--block-fd``; only after that process is in the sandbox's cgroup
is it let go, so nothing the program forks can escape the caps. bubblewrap then sets no-new-privs,
loads the seccomp filter (``--seccomp``) and runs the kernel. Where there is no bubblewrap the
kernel runs as a plain process in a temporary directory and loads the filter itself.

A box runs one program (``program=``: its verdict is how the process ends, read by ``close``) or
one session: the kernel's supervisor, talked to in frames (``kernel.encode``) over two pipes,
every read and write with a deadline. A frame over the limits, malformed, answering another
request, or late ends the sandbox.
"""

from __future__ import annotations

import functools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qwen_cli.sandbox import host
from qwen_cli.sandbox.cgroups import Cgroup
from qwen_cli.sandbox.kernel import FrameError, FrameReader, body_limit, encode
from qwen_cli.sandbox.limits import Limits, SandboxError
from qwen_cli.sandbox.seccomp import filter_program
from qwen_cli.sandbox.watchdog import Watchdog

KERNEL = Path(__file__).with_name("kernel.py")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
START_TIMEOUT_S = 30.0
_warned: list[str] = []


class BoxTimeout(Exception):
    """No answer before the deadline."""


class BoxDied(Exception):
    """The kernel ended (``reason`` empty), or broke the protocol (``reason`` says how)."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


@functools.cache
def _kernel_source() -> str:
    return KERNEL.read_text()


def _warn_once(weaker: tuple[str, ...]) -> None:
    if weaker and not _warned:
        _warned.append("yes")
        print("qwen sandbox: weaker isolation here: " + "; ".join(weaker)
              + " (docs/sandbox.md)", file=sys.stderr)


def _user_process_count() -> int:
    uid, count = str(os.getuid()), 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            count += next(line for line in status.read_text().splitlines() if line.startswith("Uid:")).split()[1] == uid
        except (OSError, StopIteration):
            continue
    return count


def _wait(fd: int, events: int, deadline: float) -> None:
    poller = select.poll()
    poller.register(fd, events)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BoxTimeout
        if poller.poll(left * 1000):
            return


class Box:
    """A started sandbox; ``call`` sends a request and returns the reply, ``close`` ends it."""

    def __init__(self, limits: Limits, program: str | None = None) -> None:
        self.limits = limits
        plan = host.plan()
        _warn_once(plan.weaker)
        self.cgroup: Cgroup | None = None
        self.watchdog: Watchdog | None = None
        self.proc: subprocess.Popen | None = None
        self.init_pid: int | None = None
        self.scratch: str | None = None
        self.workdir = host.WORKDIR
        self._uid_lock = None
        self._requests = self._replies = self._unblock = -1
        self._calls = 0
        self._reader = FrameReader(body_limit(limits.file_bytes, limits.output_bytes))
        self._stderr = tempfile.TemporaryFile()
        try:
            uid = None
            if plan.root:
                uid, self._uid_lock = host.claim_uid()
            if plan.cgroups is not None:  # bubblewrap's PID 1, the kernel (or supervisor) and what it runs
                self.cgroup = Cgroup(plan.cgroups, limits.memory_bytes, limits.processes + 2)
            self._start(plan, uid, program)
            ready = self.call(None, [], time.monotonic() + START_TIMEOUT_S)[0] if program is None else {}
        except (BoxTimeout, BoxDied) as exc:
            self.close()
            raise SandboxError(f"the sandbox did not start: {self.stderr_tail() or type(exc).__name__}") from exc
        except BaseException:
            self.close()
            raise
        if program is None and ready != {"ready": True}:
            self.close()
            raise SandboxError("the sandbox did not start: unexpected greeting")

    def _config(self, plan: host.Plan, uid: int | None, workdir: str, fds: dict) -> str:
        lim = self.limits
        nproc = lim.processes + 1 if plan.bwrap or plan.root else _user_process_count() + lim.processes + 1
        rlimits = {"RLIMIT_CPU": [lim.cpu_s, lim.cpu_s + 1], "RLIMIT_AS": [lim.memory_bytes] * 2,
                   "RLIMIT_FSIZE": [lim.file_bytes] * 2, "RLIMIT_NPROC": [nproc] * 2, "RLIMIT_CORE": [0, 0]}
        return json.dumps({"uid": uid, "rlimits": rlimits, "site": host.site_dirs(), "workdir": workdir,
                           "output_bytes": lim.output_bytes, "file_bytes": lim.file_bytes, **fds})

    def _start(self, plan: host.Plan, uid: int | None, program: str | None) -> None:
        seccomp = os.memfd_create("seccomp")
        os.write(seccomp, filter_program())
        os.lseek(seccomp, 0, os.SEEK_SET)
        passed = [seccomp]
        if program is None:
            requests, self._requests = os.pipe()
            self._replies, replies = os.pipe()
            passed += [requests, replies]
            fds = {"mode": "session", "request_fd": requests, "reply_fd": replies, "program_fd": None}
        else:
            source = os.memfd_create("program")
            os.write(source, program.encode("utf-8", "surrogatepass"))
            os.lseek(source, 0, os.SEEK_SET)
            passed.append(source)
            fds = {"mode": "program", "request_fd": None, "reply_fd": None, "program_fd": source}
        roots = {}
        if plan.bwrap:
            workdir, tmp = host.WORKDIR, "/tmp"
            info_read, info = os.pipe()
            block, self._unblock = os.pipe()
            passed += [info, block]
            prefix = host.bwrap_prefix(plan.bwrap, plan.root, self.limits.disk_bytes, "--info-fd", str(info),
                                       "--block-fd", str(block), "--seccomp", str(seccomp))
            fds["seccomp_fd"] = None
        else:
            workdir = tmp = self.scratch = tempfile.mkdtemp(prefix="qwen-sandbox-")
            if uid is not None:
                os.chown(workdir, uid, uid)
                roots = {root: os.open(root, os.O_PATH | os.O_DIRECTORY) for root in host.python_roots()}
                passed += roots.values()
            prefix = []
            fds["seccomp_fd"] = seccomp
        self.workdir = workdir
        env = {"PATH": f"{os.path.dirname(sys.executable)}:{SAFE_PATH}", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "HOME": workdir, "TMPDIR": tmp, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONIOENCODING": "utf-8", "MPLBACKEND": "Agg", "MPLCONFIGDIR": f"{tmp}/.matplotlib",
               "XDG_CACHE_HOME": f"{tmp}/.cache",
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        config = self._config(plan, uid, workdir, {**fds, "roots": roots})
        argv = [*prefix, sys.executable, "-I", "-S", "-c", _kernel_source(), config]
        try:
            self.proc = subprocess.Popen(argv, pass_fds=passed, env=env, cwd=workdir if not plan.bwrap else "/",
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
                                         start_new_session=True)
        except BaseException:
            if plan.bwrap:
                os.close(info_read)
            raise
        finally:
            for fd in passed:
                os.close(fd)
        for fd in (self._requests, self._replies):
            if fd >= 0:
                os.set_blocking(fd, False)
        if plan.bwrap:
            self._release(info_read)
        else:
            self.init_pid = self.proc.pid
            if self.cgroup is not None:
                self.cgroup.add(self.proc.pid)  # racy without bubblewrap's hand-over; weaker mode only

    def _release(self, info_read: int) -> None:
        """Read bubblewrap's report, put the sandbox's PID 1 into the cgroup, let it go on."""
        with os.fdopen(info_read, "rb") as info:
            report = info.read()
        try:
            self.init_pid = int(json.loads(report)["child-pid"])
        except (ValueError, KeyError, TypeError) as exc:
            raise BoxDied from exc
        if self.cgroup is not None:
            self.cgroup.add(self.init_pid)
        else:
            self.watchdog = Watchdog(self.init_pid, self.limits.memory_bytes, self.kill)
            self.watchdog.start()
        os.write(self._unblock, b"x")
        os.close(self._unblock)
        self._unblock = -1

    def call(self, request: dict | None, blobs: list[bytes], deadline: float) -> tuple[dict, list[bytes]]:
        """Send ``request`` with ``blobs`` (None: only read) and return the reply's header and blobs."""
        if request is not None:
            self._calls += 1
            view = memoryview(encode({**request, "id": self._calls}, blobs))
            while view:
                _wait(self._requests, select.POLLOUT, deadline)
                try:
                    view = view[os.write(self._requests, view):]
                except BlockingIOError:
                    continue
                except BrokenPipeError as exc:
                    raise BoxDied from exc
        try:
            while (frame := self._reader.next()) is None:
                _wait(self._replies, select.POLLIN, deadline)
                try:
                    chunk = os.read(self._replies, min(self._reader.want(), 1 << 20))
                except BlockingIOError:
                    continue
                if not chunk:
                    raise BoxDied
                self._reader.feed(chunk)
        except FrameError as exc:
            raise BoxDied(f"the sandbox sent {exc}") from exc
        header, data = frame
        if "broken" in header:
            raise BoxDied(str(header["broken"])[:300])
        if request is not None and header.get("id") != self._calls:
            raise BoxDied("the sandbox sent a reply to another request")
        return header, data

    def kill(self) -> None:
        """End every process of the sandbox now."""
        if self.init_pid is not None:
            try:
                os.kill(self.init_pid, signal.SIGKILL)  # a PID namespace dies with its PID 1
            except ProcessLookupError:
                pass
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stderr_tail(self) -> str:
        """The last line the kernel or bubblewrap wrote outside a cell."""
        self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(0, self._stderr.tell() - 2000))
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else ""

    def close(self, wait_s: float = 0.0) -> tuple[int | None, bool]:
        """Kill the sandbox (after ``wait_s`` for it to end by itself), reap it, remove its cgroup and
        scratch directory. Returns how the kernel had ended (its exit status, a signal as 128 + its
        number; None: still running when killed) and whether the memory cap was hit."""
        status = None
        if self.proc is not None:
            try:
                status = self.proc.wait(timeout=wait_s) if wait_s else self.proc.poll()
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        if self.proc is not None:
            self.proc.wait()
        if self.watchdog is not None:
            self.watchdog.stop()
        memory = bool((self.cgroup and self.cgroup.oom_kills()) or (self.watchdog and self.watchdog.tripped))
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None
        for name in ("_requests", "_replies", "_unblock"):
            fd = getattr(self, name, -1)
            if fd >= 0:
                os.close(fd)
            setattr(self, name, -1)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        if self._uid_lock is not None:
            self._uid_lock.close()
        return status, memory

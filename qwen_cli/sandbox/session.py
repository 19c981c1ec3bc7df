"""A stateful sandboxed Python session, like a notebook kernel: variables live from cell to cell.

    with Session(Limits(wall_s=30, session_s=600), files={"sales.csv": Path("sales.csv")}) as session:
        result = session.run("import pandas as pd\\ndf = pd.read_csv('sales.csv')\\ndf.describe()")
        result.value, result.stdout, result.error, result.files, result.figures
        session.copy_out(Path("outputs"))

``run`` returns a ``CellResult``. A cell past its time limit gets ``CellTimeout`` raised inside it
and the session lives on; if the cell ignores that for ``GRACE_S`` more, or the session's own
time (``Limits.session_s``) runs out, or the kernel dies (CPU limit, memory cap, ``os._exit``),
the sandbox is gone: that ``run`` says why, and every later call raises ``SandboxError``.

The cells run in the sandbox's worker process; the supervisor beside it (``kernel.py``) answers
``put``/``get``/``files`` and lists the files a cell changed, out of the cells' reach. Whether a
cell timed out is the host's own clock; how the worker ended (a signal, an exit status, the memory
cap) is the supervisor's observation; only a cell's exception or ``SystemExit`` comes from the
worker, which the session's own earlier cells share (a cell can always catch its own exception).
Every reply is read again here under the limits (``kernel.read_run_report``): texts cut to
``output_bytes``, at most ``MAX_FIGURES`` PNG figures of ``file_bytes`` in all, file names that
stay inside the work directory, files copied out up to a byte budget.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from qwen_cli.errors import UserError
from qwen_cli.fsutil import atomic_file
from qwen_cli.sandbox.box import Box, BoxDied, BoxTimeout
from qwen_cli.sandbox.kernel import MAX_FILES, FrameError, read_run_report
from qwen_cli.sandbox.limits import Limits, SandboxError

GRACE_S = 2.0


@dataclass(frozen=True)
class CellResult:
    """What one cell did. ``status``: ok | error (an exception) | exit (``SystemExit`` with a
    non-zero status) | timeout | killed[:SIGNAL|:memory] | died (the worker exited, or the
    sandbox broke the protocol)."""

    status: str
    stdout: str = ""
    stderr: str = ""
    error: str = ""  # "Type: message", the limit that was hit, or "exit status N"
    traceback: str = ""
    value: str | None = None  # repr of the cell's last expression, when it has a value
    files: tuple[str, ...] = ()  # files under the work directory the cell created or changed
    figures: tuple[bytes, ...] = ()  # PNG of each matplotlib figure the cell left open
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def check_name(name: object) -> str:
    """``name`` if it is a relative path that stays inside the work directory."""
    if not isinstance(name, str) or not name or name.startswith("/") or "\0" in name \
            or ".." in PurePosixPath(name).parts:
        raise SandboxError(f"{name!r}: not a relative path inside the sandbox's work directory")
    return name


def _valid_names(names: object) -> list[str]:
    found = []
    for name in names if isinstance(names, list | dict) else []:
        try:
            found.append(check_name(name))
        except SandboxError:
            continue
    return found[:MAX_FILES]


def _from_reply(header: dict, blobs: list[bytes], wall: float, limit: float, limits: Limits) -> CellResult:
    """The ``CellResult`` of a run reply, every limit re-applied; the status from what the host
    saw (the time) and the worker's report (the cell's exception or exit status)."""
    try:
        report = read_run_report(header, blobs, limits.output_bytes, limits.file_bytes)
    except FrameError as exc:
        raise BoxDied(f"the sandbox sent {exc}") from exc
    common = {"stdout": report["stdout"], "stderr": report["stderr"], "value": report["value"],
              "files": tuple(_valid_names(header.get("files"))), "figures": tuple(report["figures"]), "wall_s": wall}
    error = report["error"] or {"type": "", "message": "", "traceback": ""}
    if wall >= limit or error["type"] == "CellTimeout":
        return CellResult("timeout", error=f"cell time limit {limit:g}s exceeded", **common)
    if report["status"] == "error":
        kind, message = error["type"] or "Exception", error["message"]
        return CellResult("error", error=f"{kind}: {message}" if message else kind,
                          traceback=error["traceback"], **common)
    if report["status"] == "exit":
        return CellResult("exit", error=f"exit status {report['exit']}", **common)
    return CellResult("ok", **common)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def describe_end(code: int | None, memory: bool, limits: Limits) -> tuple[str, str]:
    """(status, reason) of a sandbox that ended with ``code`` (``Box.close``): killed[:SIGNAL|:memory] | died."""
    if memory:
        return "killed:memory", f"memory limit {limits.memory_bytes / 2**20:g} MiB exceeded (whole sandbox)"
    if code is None:
        return "killed", "the sandbox was ended"
    if code < 0 or code > 128:  # a signal: Popen says -N, bubblewrap exits 128 + N
        name = _signal_name(-code if code < 0 else code - 128)
        why = " (CPU time limit)" if name in ("SIGXCPU", "SIGKILL") else ""
        return f"killed:{name}", f"killed by {name}{why}"
    return "died", f"the Python process exited with status {code}"


class Session:
    """A sandboxed Python process keeping its variables between ``run`` calls."""

    def __init__(self, limits: Limits = Limits(), files: Mapping[str, bytes | Path] | None = None) -> None:
        self.limits = limits
        self._deadline = time.monotonic() + limits.session_s
        self._box: Box | None = Box(limits)
        self.workdir = self._box.workdir
        try:
            for name, content in (files or {}).items():
                self.put(name, content)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self._box is not None

    def _end(self, wait_s: float = 0.0, broken: str = "") -> tuple[str, str]:
        """Close the sandbox; (status, reason) of how the kernel had ended (``broken``: it broke
        the protocol, which is then the reason)."""
        assert self._box is not None
        code, memory = self._box.close(wait_s)
        self._box = None
        if broken and not memory:
            return "died", f"the sandbox ended: {broken}"
        return describe_end(code, memory, self.limits)

    def _open(self) -> Box:
        if self._box is None:
            raise SandboxError("the sandbox session is over (time limit, a crash, or closed)")
        return self._box

    def run(self, code: str, timeout_s: float | None = None) -> CellResult:
        """Run one cell (``timeout_s``: its limit, default ``limits.wall_s``)."""
        box = self._open()
        start = time.monotonic()
        wanted = timeout_s or self.limits.wall_s
        limit = min(wanted, self._deadline - start)
        which = "cell" if limit == wanted else "session"
        if limit <= 0:
            self._end()
            return CellResult("timeout", error=f"session time limit {self.limits.session_s:g}s exceeded")
        source = code.encode("utf-8", "surrogatepass")
        if len(source) > self.limits.file_bytes:
            return CellResult("error", error=f"the cell is longer than the {self.limits.file_bytes}-byte limit")
        try:
            header, blobs = box.call({"op": "run", "timeout": limit}, [source], start + limit + GRACE_S)
            return _from_reply(header, blobs, time.monotonic() - start, limit, self.limits)
        except BoxTimeout:
            self._end()
            return CellResult("timeout", error=f"{which} time limit {limit:g}s exceeded",
                              wall_s=time.monotonic() - start)
        except BoxDied as exc:
            status, reason = self._end(wait_s=1.0, broken=exc.reason)
            return CellResult(status, error=reason, wall_s=time.monotonic() - start)

    def _call(self, request: dict, blobs: list[bytes], what: str) -> tuple[dict, list[bytes]]:
        box = self._open()
        try:
            header, data = box.call(request, blobs, time.monotonic() + max(self.limits.wall_s, 10.0))
        except (BoxTimeout, BoxDied) as exc:
            _, reason = self._end(wait_s=1.0, broken=getattr(exc, "reason", ""))
            raise SandboxError(f"{what}: the sandbox stopped answering ({reason})") from exc
        if "failed" in header:
            failed = header["failed"]
            raise SandboxError(f"{what}: {failed[:500] if isinstance(failed, str) else 'failed'}")
        return header, data

    def put(self, name: str, content: bytes | Path) -> None:
        """Copy a file into the work directory (``content``: the bytes, or a host file to read)."""
        check_name(name)
        data = content.read_bytes() if isinstance(content, os.PathLike) else content
        if len(data) > self.limits.file_bytes:
            raise SandboxError(f"{name}: larger than the {self.limits.file_bytes}-byte file limit")
        self._call({"op": "put", "path": name}, [data], f"{name}: copy in")

    def get(self, name: str) -> bytes:
        """The bytes of a regular file in the work directory (at most ``limits.file_bytes``)."""
        check_name(name)
        _, blobs = self._call({"op": "get", "path": name}, [], f"{name}: copy out")
        if len(blobs) != 1 or len(blobs[0]) > self.limits.file_bytes:
            raise SandboxError(f"{name}: copy out: not one file of at most {self.limits.file_bytes} bytes")
        return blobs[0]

    def files(self) -> dict[str, int]:
        """Every regular file in the work directory and its size in bytes (at most ``MAX_FILES``)."""
        listing = self._call({"op": "list"}, [], "list files")[0].get("files")
        if not isinstance(listing, dict):
            return {}
        return {name: size for name in _valid_names(listing) if type(size := listing[name]) is int}

    def copy_out(self, dest: Path, names: Iterable[str] | None = None, budget: int | None = None) -> list[Path]:
        """Copy files of the work directory (default: all) under ``dest``, each written atomically:
        at most ``MAX_FILES`` files and ``budget`` bytes (default ``limits.disk_bytes``) in all; a
        ``SandboxError`` for the first one that cannot be had or written."""
        names = list(self.files()) if names is None else list(names)
        if len(names) > MAX_FILES:
            raise SandboxError(f"{len(names)} files to copy out: more than {MAX_FILES}")
        total = self.limits.disk_bytes if budget is None else budget
        left = total
        written = []
        for name in names:
            data = self.get(check_name(name))
            left -= len(data)
            if left < 0:
                raise SandboxError(f"{name}: copy out: over the {total}-byte budget")
            target = Path(dest) / name
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with atomic_file(target, "wb") as handle:
                    handle.write(data)
            except (OSError, UserError) as exc:
                raise SandboxError(f"{name}: copy out: cannot write {target} ({exc})") from exc
            written.append(target)
        return written

    def close(self) -> None:
        """End the sandbox (its processes, files and cgroup go with it)."""
        if self._box is not None:
            self._end()

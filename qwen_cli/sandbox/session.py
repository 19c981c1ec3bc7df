"""A stateful sandboxed Python session, like a notebook kernel: variables live from cell to cell.

    with Session(Limits(wall_s=30, session_s=600), files={"sales.csv": Path("sales.csv")}) as session:
        result = session.run("import pandas as pd\\ndf = pd.read_csv('sales.csv')\\ndf.describe()")
        result.value, result.stdout, result.error, result.files, result.figures
        session.copy_out(Path("outputs"))

``run`` returns a ``CellResult``. A cell past its time limit gets ``CellTimeout`` raised inside it
and the session lives on; if the cell ignores that for ``GRACE_S`` more, or the session's own
time (``Limits.session_s``) runs out, or the kernel dies (CPU limit, memory cap, ``os._exit``),
the sandbox is gone: that ``run`` says why, and every later call raises ``SandboxError``.
``run_program`` (pass@k) is a one-cell session.
"""

from __future__ import annotations

import base64
import binascii
import os
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from qwen_cli.fsutil import atomic_file
from qwen_cli.sandbox.box import Box, BoxDied, BoxTimeout
from qwen_cli.sandbox.limits import Limits, SandboxError

GRACE_S = 2.0


@dataclass(frozen=True)
class CellResult:
    """What one cell did. ``status``: ok | error (an exception) | exit (``SystemExit`` with a
    non-zero status) | timeout | killed[:SIGNAL|:memory] | died (the kernel exited)."""

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


def _text(mapping: dict, key: str, limit: int) -> str:
    value = mapping.get(key)
    return value[:limit] if isinstance(value, str) else ""


def _valid_names(names: object) -> list[str]:
    found = []
    for name in names if isinstance(names, list | dict) else []:
        try:
            found.append(check_name(name))
        except SandboxError:
            continue
    return found


def _from_reply(reply: dict, wall: float, limit: float, output_bytes: int) -> CellResult:
    """The ``CellResult`` for a kernel's reply, believing nothing in it."""
    figures = []
    for data in reply.get("figures") or []:
        try:
            figures.append(base64.b64decode(data, validate=True))
        except (binascii.Error, TypeError, ValueError):
            continue
    value = reply.get("value")
    common = {"stdout": _text(reply, "stdout", 2 * output_bytes), "stderr": _text(reply, "stderr", 2 * output_bytes),
              "value": value[:output_bytes] if isinstance(value, str) else None,
              "files": tuple(_valid_names(reply.get("files"))), "figures": tuple(figures), "wall_s": wall}
    error, code = reply.get("error"), reply.get("exit")
    if isinstance(error, dict):
        kind, message = _text(error, "type", 200), _text(error, "message", 2000)
        if kind == "CellTimeout":
            return CellResult("timeout", error=f"cell time limit {limit:g}s exceeded", **common)
        return CellResult("error", error=f"{kind}: {message}" if message else kind,
                          traceback=_text(error, "traceback", 8000), **common)
    if isinstance(code, int) and code:
        return CellResult("exit", error=f"exit status {code}", **common)
    return CellResult("ok", **common)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


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

    def _end(self, wait_s: float = 0.0) -> tuple[str, str]:
        """Close the sandbox; (status, reason) of how the kernel had ended."""
        assert self._box is not None
        code, memory = self._box.close(wait_s)
        self._box = None
        if memory:
            return "killed:memory", f"memory limit {self.limits.memory_bytes / 2**20:g} MiB exceeded (whole sandbox)"
        if code is None:
            return "killed", "the sandbox was ended"
        if code < 0 or code > 128:  # a signal: Popen says -N, bubblewrap exits 128 + N
            name = _signal_name(-code if code < 0 else code - 128)
            why = " (CPU time limit)" if name in ("SIGXCPU", "SIGKILL") else ""
            return f"killed:{name}", f"killed by {name}{why}"
        return "died", f"the Python process exited with status {code}"

    def _open(self) -> Box:
        if self._box is None:
            raise SandboxError("the sandbox session is over (time limit, a crash, or closed)")
        return self._box

    def run(self, code: str, timeout_s: float | None = None, interrupt: bool = True) -> CellResult:
        """Run one cell (``timeout_s``: its limit, default ``limits.wall_s``). ``interrupt=False``
        skips the in-cell ``CellTimeout``: the sandbox is killed right at the limit instead."""
        box = self._open()
        start = time.monotonic()
        wanted = timeout_s or self.limits.wall_s
        limit = min(wanted, self._deadline - start)
        which = "cell" if limit == wanted else "session"
        if limit <= 0:
            self._end()
            return CellResult("timeout", error=f"session time limit {self.limits.session_s:g}s exceeded")
        grace = GRACE_S if interrupt else 0.0
        try:
            reply = box.call({"op": "run", "code": code, "timeout": limit if interrupt else None},
                             start + limit + grace)
        except BoxTimeout:
            self._end()
            return CellResult("timeout", error=f"{which} time limit {limit:g}s exceeded",
                              wall_s=time.monotonic() - start)
        except BoxDied:
            status, reason = self._end(wait_s=1.0)
            return CellResult(status, error=reason, wall_s=time.monotonic() - start)
        return _from_reply(reply, time.monotonic() - start, limit, self.limits.output_bytes)

    def _call(self, request: dict, what: str) -> dict:
        box = self._open()
        try:
            reply = box.call(request, time.monotonic() + max(self.limits.wall_s, 10.0))
        except (BoxTimeout, BoxDied) as exc:
            _, reason = self._end(wait_s=1.0)
            raise SandboxError(f"{what}: the sandbox stopped answering ({reason})") from exc
        if "failed" in reply:
            raise SandboxError(f"{what}: {_text(reply, 'failed', 500)}")
        return reply

    def put(self, name: str, content: bytes | Path) -> None:
        """Copy a file into the work directory (``content``: the bytes, or a host file to read)."""
        check_name(name)
        data = content.read_bytes() if isinstance(content, os.PathLike) else content
        self._call({"op": "put", "path": name, "data": base64.b64encode(data).decode()}, f"{name}: copy in")

    def get(self, name: str) -> bytes:
        """The bytes of a file in the work directory (at most ``limits.file_bytes``)."""
        check_name(name)
        reply = self._call({"op": "get", "path": name, "limit": self.limits.file_bytes}, f"{name}: copy out")
        try:
            data = base64.b64decode(reply.get("data", ""), validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise SandboxError(f"{name}: copy out: garbled reply") from exc
        if len(data) > self.limits.file_bytes:
            raise SandboxError(f"{name}: larger than the {self.limits.file_bytes}-byte file limit")
        return data

    def files(self) -> dict[str, int]:
        """Every regular file in the work directory and its size in bytes."""
        listing = self._call({"op": "list"}, "list files").get("files")
        if not isinstance(listing, dict):
            return {}
        return {name: size for name in _valid_names(listing) if isinstance(size := listing[name], int)}

    def copy_out(self, dest: Path, names: Iterable[str] | None = None) -> list[Path]:
        """Copy files of the work directory (default: all) under ``dest``, each written atomically."""
        written = []
        for name in list(self.files()) if names is None else list(names):
            data = self.get(check_name(name))
            target = Path(dest) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(target, "wb") as handle:
                handle.write(data)
            written.append(target)
        return written

    def close(self) -> None:
        """End the sandbox (its processes, files and cgroup go with it)."""
        if self._box is not None:
            self._end()

"""What one sandbox may use, and the error raised when a sandbox cannot be had."""

from __future__ import annotations

from dataclasses import dataclass

from qwen_cli.errors import UserError


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox (one program, or one session and all its cells)."""

    wall_s: float = 10.0  # one program (run_program), or one cell (Session.run) by default
    session_s: float = 600.0  # a whole Session, all its cells together
    cpu_s: int = 10  # CPU seconds per process over its life (RLIMIT_CPU)
    memory_bytes: int = 1 << 30  # the whole sandbox (processes + its tmpfs), and each process's address space
    file_bytes: int = 16 << 20  # the largest file a program may write (RLIMIT_FSIZE), or copy out
    disk_bytes: int = 64 << 20  # each private tmpfs: the work directory, /tmp and /dev/shm
    processes: int = 32  # processes and threads alive in the sandbox at once
    output_bytes: int = 64 << 10  # stdout, stderr and a last expression's repr kept per cell


class SandboxError(UserError):
    """A sandbox that could not be started, or a session that can no longer be used."""

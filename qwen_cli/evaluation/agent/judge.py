"""A pluggable judge for visualisation tasks: an outside command that looks at images and says yes/no.

``qwen eval --judge CMD`` runs ``CMD QUESTION IMAGE [IMAGE ...]`` (``CMD`` split like a shell
would, never run through one) once per visualisation task that produced images. The command prints
its verdict on stdout: the first word decides (``yes``/``right``/``true`` or ``no``/``wrong``/
``false``, any case). A command that exits non-zero, runs past its time limit or prints anything
else gives no verdict: the task counts as not correct and the reason is kept in the JSON record.
The report used a vision-language model (Qwen-VL, later GPT-4V) asked whether the image fits the
question; any such model behind a small script can serve.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from qwen_cli.errors import UserError

YES, NO = ("yes", "right", "true", "correct"), ("no", "wrong", "false", "incorrect")
JUDGE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Verdict:
    """What the judge said: ``correct`` is None when it gave no usable answer (``error`` says why)."""

    correct: bool | None
    output: str = ""
    error: str = ""

    def to_json(self) -> dict:
        return {"correct": self.correct, "output": self.output, "error": self.error}


class Judge:
    """The ``--judge`` command, checked once when built (a ``UserError`` if it cannot be run)."""

    def __init__(self, command: str, timeout_s: float = JUDGE_TIMEOUT_S) -> None:
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise UserError(f"--judge {command!r}: cannot split into a command line ({exc})") from None
        if not self.argv:
            raise UserError("--judge: empty command")
        program = self.argv[0]
        found = shutil.which(program) if os.sep not in program else (program if os.access(program, os.X_OK) else None)
        if found is None:
            raise UserError(f"--judge: {program}: not an executable program (not found, or not executable)")
        self.command, self.timeout_s = command, timeout_s

    def __call__(self, question: str, images: list[Path]) -> Verdict:
        """Ask about ``images`` (host paths) for ``question``."""
        try:
            done = subprocess.run([*self.argv, question, *map(str, images)], capture_output=True, text=True,
                                  timeout=self.timeout_s, stdin=subprocess.DEVNULL, errors="replace")
        except subprocess.TimeoutExpired:
            return Verdict(None, error=f"the judge ran past its {self.timeout_s:g}s limit")
        except OSError as exc:
            return Verdict(None, error=f"the judge could not start ({exc})")
        output = done.stdout.strip()[:2000]
        if done.returncode != 0:
            return Verdict(None, output, f"the judge exited with status {done.returncode}: "
                                         f"{done.stderr.strip()[-300:]}")
        correct = parse_verdict(output)
        return Verdict(correct, output, "" if correct is not None else "the judge said neither yes nor no")


def parse_verdict(output: str) -> bool | None:
    """True/False from the first word of a judge's output; None when it is neither yes nor no."""
    words = output.split()
    first = words[0].strip(".,:;!\"'`*").lower() if words else ""
    return True if first in YES else False if first in NO else None


"""User-facing errors: one line, naming the file/key at fault, and an exit code.

Anything raised as ``UserError`` is printed by the CLI as ``error: <message>`` and
exits with ``exit_code`` (2 = bad input or usage, 1 = a run that failed).
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input that should be reported in one line."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class RunFailed(UserError):
    """A run that started correctly but could not finish (exit code 1)."""

    exit_code = 1

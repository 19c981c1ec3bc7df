"""Run the ``qwen`` CLI and SIGKILL it the moment its ``metrics.jsonl`` has logged a given step.

Usage: ``python tests/sigkill_at_step.py STEP qwen-arguments…``. The kill comes from inside the
process, right after the record is flushed, so it lands at the same point of the run on any
machine (a watcher polling the file from outside can arrive after a fast run has finished).
SIGKILL cannot be caught: no handler, ``finally`` or atexit hook of the run gets to run.
"""

from __future__ import annotations

import os
import signal
import sys

from qwen_cli import cli
from qwen_cli.train import progress


def _kill_after(step: int) -> None:
    write = progress.MetricsWriter.write

    def write_then_die(self, record):
        write(self, record)
        if record.get("step", 0) >= step:
            os.kill(os.getpid(), signal.SIGKILL)

    progress.MetricsWriter.write = write_then_die


if __name__ == "__main__":
    _kill_after(int(sys.argv[1]))
    sys.argv = ["qwen", *sys.argv[2:]]
    cli.main()

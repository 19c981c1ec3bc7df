"""Process-level run control the loops share: seeding every RNG and stopping cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import contextlib
import random
import signal
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class StopSignals:
    """First SIGINT/SIGTERM sets ``received``; a second one restores defaults and re-raises."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            self.restore()
            signal.raise_signal(signum)
            return
        self.received = signum

    def __enter__(self) -> StopSignals:
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __exit__(self, *exc) -> None:
        self.restore()

"""Model FLOPs utilisation (MFU): achieved model FLOP/s over a matmul peak measured at start.

The peak stands in for the hardware's: the best matmul FLOP/s of many short trials spread over
about a second (:func:`measure_peak_flops`), so one quiet moment on a busy machine is enough.
When every trial ran slow (other processes held the cores) and training later ran faster, MFU
comes out above 100% (157-181% was seen on 2 shared cores). Such a value is never shown or
recorded as fact: :class:`Utilisation` records it with ``"mfu_over_peak": true`` beside it
(``metrics.jsonl`` and ``--json``), leaves it out of the progress line and says once
``mfu >100% (peak under-measured …)``. A fixed ``train.peak_flops`` skips the measurement.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch


def measure_peak_flops(device: torch.device, dtype: torch.dtype, seconds: float = 1.0, trials: int = 12) -> float:
    """Matmul FLOP/s on ``device``: the best of ``trials`` short trials in ``dtype`` and as many in fp32.

    The trials share ``seconds``; the best one is a peak robust to a busy machine. fp32 counts too
    because CPUs without native bf16 emulate it several times slower than fp32.
    """
    n = 4096 if device.type == "cuda" else 1024
    kinds = dict.fromkeys((dtype, torch.float32))
    trial_seconds = seconds / (trials * len(kinds))
    best = 0.0
    for kind in kinds:
        a = torch.randn(n, n, device=device).to(kind)
        b = torch.randn(n, n, device=device).to(kind)
        torch.nn.functional.linear(a, b)  # warm-up
        for _ in range(trials):
            reps, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < trial_seconds or reps == 0:
                torch.nn.functional.linear(a, b)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                reps += 1
            best = max(best, 2 * n**3 * reps / elapsed)
    return best


class Utilisation:
    """MFU of each step against a per-device ``peak``; a value above 100% is flagged and explained once."""

    def __init__(self, flops_per_token: float, peak: float, devices: int, say: Callable[[str], None]) -> None:
        self.flops_per_token, self.peak, self.devices, self.say = flops_per_token, peak, devices, say
        self._said = False

    def fields(self, tok_per_s: float) -> dict[str, float | bool]:
        """``{"mfu": …}`` for a step's record, plus ``"mfu_over_peak": True`` when it exceeds 1."""
        mfu = tok_per_s * self.flops_per_token / (self.peak * self.devices)
        if mfu <= 1:
            return {"mfu": mfu}
        if not self._said:
            self._said = True
            self.say(f"mfu >100% (peak under-measured: {self.peak / 1e9:.3g} GFLOP/s per device); left out "
                     "of the progress line, flagged mfu_over_peak in metrics (set train.peak_flops to fix the peak)")
        return {"mfu": mfu, "mfu_over_peak": True}

    @staticmethod
    def shown(record: Mapping[str, Any]) -> Mapping[str, Any]:
        """``record`` for the progress line: an MFU over the peak is left out (it is no utilisation)."""
        return {**record, "mfu": None} if record.get("mfu_over_peak") else record

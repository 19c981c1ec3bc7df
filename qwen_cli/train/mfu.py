"""Model FLOPs utilisation: the matmul peak the trainer divides achieved FLOP/s by."""

from __future__ import annotations

import time

import torch


def measure_peak_flops(device: torch.device, dtype: torch.dtype, seconds: float = 0.3) -> float:
    """Matmul FLOP/s on ``device``: the best of three short trials in ``dtype`` and in fp32.

    A cheap stand-in for the hardware peak (robust to a briefly busy machine). fp32 counts too
    because CPUs without native bf16 emulate it several times slower than fp32.
    """
    n = 4096 if device.type == "cuda" else 1024
    best = 0.0
    for kind in dict.fromkeys((dtype, torch.float32)):
        a = torch.randn(n, n, device=device).to(kind)
        b = torch.randn(n, n, device=device).to(kind)
        torch.nn.functional.linear(a, b)  # warm-up
        for _ in range(3):
            reps, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds / 6 or reps == 0:
                torch.nn.functional.linear(a, b)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                reps += 1
            best = max(best, 2 * n**3 * reps / elapsed)
    return best

"""Launch settings shared by the Triton kernels (imported only when a kernel runs)."""

from __future__ import annotations

import torch
import triton


def row_block(width: int) -> tuple[int, int]:
    """(BLOCK, num_warps) for a kernel that holds one row of ``width`` elements in registers."""
    block = triton.next_power_of_2(width)
    warps = 32 if block >= 32768 else 16 if block >= 8192 else 8 if block >= 2048 else 4
    return block, warps


def program_count(rows: int, device: torch.device) -> int:
    """Programs for a kernel that loops over rows (two per streaming multiprocessor; few when interpreted)."""
    if device.type == "cuda":
        return max(1, min(rows, 2 * torch.cuda.get_device_properties(device).multi_processor_count))
    return max(1, min(rows, 4))

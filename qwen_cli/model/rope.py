"""Rotary position embedding (RoPE): fp32 inverse frequencies, cos/sin tables, rotate-half application.

The room for RoPE variants (dynamic NTK-aware scaling, LogN attention scaling): everything
that turns positions into rotations lives here, so the decoder only calls these functions.
"""

from __future__ import annotations

import torch


def rotary_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """Inverse frequencies θ^(-2i/d), always fp32 (bf16 frequencies lose long-range positions)."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def rotary_cos_sin(position_ids: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype):
    """cos/sin tables [B, 1, T, D] for the given positions, computed in fp32."""
    angles = position_ids[..., None].float() * inv_freq.to(position_ids.device)
    angles = torch.cat((angles, angles), dim=-1)[:, None]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin

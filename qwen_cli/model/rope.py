"""Rotary position embedding (RoPE) and the report's training-free context extension (§2.5).

Plain RoPE rotates each (i, i + d/2) pair of a query/key by ``position · θ^(-2i/d)``. Beyond the
training length T (``ModelConfig.trained_context``), at inference only:

* **dynamic NTK** (Qwen's ``modeling_qwen.py``): for a sequence of total length L,
  ``alpha = max(2^ceil(log2(L/T) + 1) - 1, 1)`` (1 up to T, 3 up to 2T, 7 up to 4T …) and the base
  becomes ``θ · alpha^(d/(d-2))``; ``continuous`` is the un-bucketed form ``θ · max(L/T, 1)^(d/(d-2))``
  (transformers' "dynamic" rope type with factor 1), kept for comparison;
* **LogN scaling**: the query at 1-based position i > T is multiplied by ``log(i) / log(T)``.

Keys already in a KV cache were rotated with the base of their time; because rotations in one
plane compose, rotating them by ``position · (inv_freq_new - inv_freq_old)`` gives exactly the
keys a full recompute with the new base would produce (``KVCache.rerotate``).
"""

from __future__ import annotations

import math

import torch

from qwen_cli.kernels.rope import apply_rotary  # the rotation itself (and its Triton kernel) lives there

__all__ = ["apply_rotary", "logn_scale", "ntk_alpha", "rope_theta_for", "rotary_cos_sin", "rotary_inv_freq"]


def rotary_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """Inverse frequencies θ^(-2i/d), always fp32 (bf16 frequencies lose long-range positions)."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def rotary_cos_sin(position_ids: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype):
    """cos/sin tables [B, 1, T, D] for the given positions, computed in fp32."""
    angles = position_ids[..., None].float() * inv_freq.to(position_ids.device)
    angles = torch.cat((angles, angles), dim=-1)[:, None]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def ntk_alpha(length: int, trained: int) -> int:
    """Qwen's bucketed NTK scale for a sequence of ``length`` tokens trained at ``trained``."""
    if length <= trained:
        return 1
    return max(2 ** math.ceil(math.log2(length / trained) + 1) - 1, 1)


def rope_theta_for(theta: float, head_dim: int, mode: str, length: int, trained: int) -> float:
    """The rotary base for a sequence of ``length`` tokens (``mode``: none | dynamic | continuous)."""
    if mode == "none" or length <= trained:
        return theta
    scale = ntk_alpha(length, trained) if mode == "dynamic" else length / trained
    return theta * scale ** (head_dim / (head_dim - 2))


def logn_scale(position_ids: torch.Tensor, trained: int) -> torch.Tensor:
    """Per-query factor [B, 1, T, 1]: ``log(i)/log(trained)`` at 1-based positions i > trained, else 1."""
    i = (position_ids + 1).double()
    scale = torch.where(i > trained, torch.log(i) / math.log(trained), torch.ones_like(i))
    return scale[:, None, :, None].float()


"""Rotary position embedding (rotate-half): a Triton kernel (forward + backward) beside the plain-torch
reference :func:`apply_rotary`.

Both read the cos/sin tables of ``qwen_cli.model.rope.rotary_cos_sin`` ([B, 1, T, D], computed in fp32
from the positions and the inverse frequencies, then cast), so every base works alike: the plain
``rope_theta``, the dynamic-NTK base of a long sequence, a re-rotated KV cache's frequency difference.
The kernel reads the first half of each table (the halves are equal), rotates each (i, i + D/2) pair
in fp32 and rounds once; its backward is the rotation by minus the angle.
"""

from __future__ import annotations

import torch

from .dispatch import use_triton


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Plain torch: ``x · cos + rotate_half(x) · sin`` (x [..., T, D], tables broadcast against it)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class _Rotary(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin):
        from . import rope_triton

        ctx.save_for_backward(cos, sin)
        return rope_triton.rotate(x, cos, sin, inverse=False)

    @staticmethod
    def backward(ctx, dy):
        from . import rope_triton

        cos, sin = ctx.saved_tensors
        return rope_triton.rotate(dy, cos, sin, inverse=True), None, None


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """``x [B, H, T, D]`` rotated by the tables ``cos``/``sin`` [B, 1, T, D] (``backend``: see
    ``kernels.dispatch``); the tables carry no gradient."""
    if use_triton(backend, x):
        return _Rotary.apply(x, cos, sin)
    return apply_rotary(x, cos, sin)

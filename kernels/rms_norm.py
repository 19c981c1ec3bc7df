"""RMSNorm, ``weight · x / rms(x)``: a Triton kernel (forward + backward) beside the plain-torch reference.

Numerics, both paths: ``x`` is normalised in fp32 and rounded to its own dtype, then multiplied by the
gain in the promoted dtype of the two (an fp32 gain on bf16 activations gives fp32, as the decoder's
RMSNorm always has). The Triton forward keeps each row's 1/rms for the backward, which computes
``dx = (w·dy − x̂·mean(w·dy·x̂)) / rms`` in one pass and sums ``dw`` per program before one final sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .dispatch import use_triton


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Plain torch: normalise in fp32, round to ``x``'s dtype, scale by ``weight``."""
    normed = F.rms_norm(x.float(), (x.shape[-1],), eps=eps)
    return weight * normed.to(x.dtype)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        from . import rms_norm_triton

        rows = x.reshape(-1, x.shape[-1])
        y, rstd = rms_norm_triton.forward(rows, weight, eps)
        ctx.save_for_backward(rows, weight, rstd)
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, dy):
        from . import rms_norm_triton

        rows, weight, rstd = ctx.saved_tensors
        dx, dw = rms_norm_triton.backward(dy.reshape(-1, dy.shape[-1]), rows, weight, rstd)
        return dx.view(dy.shape), dw, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, backend: str = "auto") -> torch.Tensor:
    """RMSNorm of ``x [..., N]`` with gain ``weight [N]`` (``backend``: see ``kernels.dispatch``)."""
    if use_triton(backend, x):
        return _RMSNorm.apply(x, weight, eps)
    return rms_norm_reference(x, weight, eps)

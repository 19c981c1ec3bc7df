"""SwiGLU, ``silu(gate) · up``: a Triton kernel (forward + backward) beside the plain-torch reference.

Both take the fused ``gate_up`` projection output ``[..., 2·I]`` (gate first, as the decoder stores
it) and return ``[..., I]``. The Triton path computes in fp32 and rounds once; its backward writes
``d gate_up`` in one tensor, so no gradient is concatenated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .dispatch import use_triton


def swiglu_reference(gate_up: torch.Tensor) -> torch.Tensor:
    """Plain torch: ``silu(gate) · up`` with ``gate, up = gate_up.chunk(2, -1)``."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate_up):
        from . import swiglu_triton

        rows = gate_up.reshape(-1, gate_up.shape[-1])
        ctx.save_for_backward(rows)
        y = swiglu_triton.forward(rows)
        return y.view(*gate_up.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, dy):
        from . import swiglu_triton

        (rows,) = ctx.saved_tensors
        d_gate_up = swiglu_triton.backward(dy.reshape(-1, dy.shape[-1]), rows)
        return d_gate_up.view(*dy.shape[:-1], d_gate_up.shape[-1])


def swiglu(gate_up: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """``silu(gate) · up`` of ``gate_up [..., 2·I]`` (``backend``: see ``kernels.dispatch``)."""
    if use_triton(backend, gate_up):
        return _SwiGLU.apply(gate_up)
    return swiglu_reference(gate_up)

"""int8 weight-only quantisation for inference: every Linear of the decoder and the output matrix.

Each weight row (output channel) is scaled by ``max|w| / 127`` and rounded to int8; matmuls run
on PyTorch's own packed kernel ``torch.ops.aten._weight_int8pack_mm``, fed bfloat16 activations
(its fast path: on an AVX2 CPU it runs ~8x faster than with fp32 activations and ~4x faster than an
fp32 matmul of the same shape) and cast back to the model's dtype; the int8 weight is dequantised
inside the kernel. That kernel also costs a fixed ~12 ms per call on this 2-core AVX2 CPU whatever
the size (measured: a 1536×512 matrix takes 12 ms int8 vs 0.5 ms fp32; the 151,936×512 output
matrix 51 ms vs 92 ms), so by default only matrices of at least ``MIN_ELEMENTS`` weights are
quantised — the output matrix of a small model, every linear layer of a 7B one. On CUDA the matmul is
``linear(x, int8 weight → activation dtype) · scale`` instead (gpt-fast's form): under ``torch.compile``
inductor fuses the int8 → bf16 conversion into the matmul, so a decode step reads one byte per weight
(half of bf16's), the lever on a memory-bound GPU decode; eager it is correct but slower than bf16. A quantised model is for
inference only: its ``state_dict`` refuses to be taken, so no code path can save it as a checkpoint
(over an fp32 one or anywhere else) — quantise again after loading the fp32 checkpoint instead.
"""

from __future__ import annotations

import torch
from torch import nn

QUANTIZE_MODES = ("none", "int8")
COMPUTE_DTYPE = torch.bfloat16  # activations inside the int8 kernel
MIN_ELEMENTS = 1 << 22  # smaller matrices stay in float: the kernel's fixed cost outweighs the bytes saved


class Int8Linear(nn.Module):
    """``x @ (int8 weight · per-row scale)ᵀ + bias`` with the weight stored as int8 [out, in]."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        self.register_buffer("weight_int8", torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(COMPUTE_DTYPE))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if x.is_cuda:
            out = torch.nn.functional.linear(flat, self.weight_int8.to(x.dtype)) * self.scales.to(x.dtype)
        else:
            out = torch.ops.aten._weight_int8pack_mm(flat.to(COMPUTE_DTYPE), self.weight_int8, self.scales).to(x.dtype)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


class QuantizedSaveError(RuntimeError):
    """Raised when something tries to take the state dict of an int8-quantised model."""


def _refuse_state_dict(module, *_args, **_kwargs):
    raise QuantizedSaveError("an int8-quantised model cannot be saved; save or load the fp32 checkpoint instead")


def quantize_model(model: nn.Module, mode: str, min_elements: int = MIN_ELEMENTS) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` with >= ``min_elements`` weights in place by its ``mode``
    quantised twin (0: every one); returns ``model``."""
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"unknown quantisation {mode!r}; choose one of {', '.join(QUANTIZE_MODES)}")
    if mode == "none":
        return model
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and module.weight.numel() >= min_elements]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, Int8Linear(linear))
    model.eval().requires_grad_(False)
    model.quantization = mode
    model._register_state_dict_hook(_refuse_state_dict)
    return model

"""LoRA: low-rank adapters on chosen linear layers, merged back into plain weights on save.

``apply_lora(model, rank, alpha, dropout, targets)`` freezes every parameter and wraps each
``nn.Linear`` whose name ends with one of ``targets`` (``qkv_proj``, ``o_proj``, ``gate_up_proj``,
``down_proj``) in :class:`LoraLinear`: ``y = base(x) + (alpha / rank) · B(A(dropout(x)))`` with
A ~ Kaiming-uniform and B = 0, so training starts from the unchanged model. Only A and B train.

``merge_state(state, scale)`` turns a wrapped model's state dict back into the plain one
(``W + scale · B @ A``), so checkpoints stay ordinary Qwen2 directories; ``adapter_state`` /
``unmerged_state`` hold the adapters apart for exact resume.
"""

from __future__ import annotations

import math

import torch
from torch import nn

TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
A_SUFFIX, B_SUFFIX, BASE_INFIX = ".lora_a", ".lora_b", ".base."


class LoraLinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable rank-``rank`` update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (self.dropout(x) @ self.lora_a.T @ self.lora_b.T) * self.scale


def apply_lora(model: nn.Module, rank: int, alpha: float, dropout: float = 0.0,
               targets: tuple[str, ...] | list[str] = TARGETS) -> int:
    """Freeze ``model`` and wrap the target linears in place; returns how many were wrapped."""
    unknown = set(targets) - set(TARGETS)
    if unknown:
        raise ValueError(f"unknown LoRA target(s) {sorted(unknown)}; choose among {', '.join(TARGETS)}")
    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    for param in model.parameters():
        param.requires_grad_(False)
    chosen = [(name, module) for name, module in model.named_modules()
              if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets]
    for name, module in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoraLinear(module, rank, alpha, dropout))
    return len(chosen)


def merge_state(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """Plain state dict of a LoRA-wrapped model: every ``X.base.*`` becomes ``X.*``, weights merged."""
    merged = {}
    for key, value in state.items():
        if key.endswith((A_SUFFIX, B_SUFFIX)):
            continue
        if BASE_INFIX in key:
            prefix, _, leaf = key.rpartition(BASE_INFIX)
            if leaf == "weight":
                a, b = state[prefix + A_SUFFIX].float(), state[prefix + B_SUFFIX].float()
                value = (value.float() + scale * (b @ a)).to(value.dtype)
            key = f"{prefix}.{leaf}"
        merged[key] = value
    return merged


def adapter_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Only the LoRA factors of a wrapped model's state dict."""
    return {k: v for k, v in state.items() if k.endswith((A_SUFFIX, B_SUFFIX))}


def unmerged_state(base: dict[str, torch.Tensor], adapters: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A wrapped model's state dict from the plain base weights and saved adapters (for resume)."""
    wrapped = {k.removesuffix(A_SUFFIX) for k in adapters if k.endswith(A_SUFFIX)}
    state = dict(adapters)
    for key, value in base.items():
        prefix, _, leaf = key.rpartition(".")
        state[f"{prefix}.base.{leaf}" if prefix in wrapped else key] = value
    return state

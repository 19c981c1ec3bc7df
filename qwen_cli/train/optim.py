"""AdamW with decay / no-decay parameter groups and the warm-up + cosine learning-rate schedule.

Weight decay: applied to every parameter with two or more dimensions (all matmul weights and
the token embedding, as Megatron-LM does — the framework Qwen was trained with) and never to
one-dimensional ones (biases, RMSNorm gains). Decaying a norm gain pulls it towards 0, i.e.
towards switching the layer off, which is not the intended regulariser.

Schedule (report §2.4: "cosine learning rate schedule ... decayed to 10% of the peak"): linear
warm-up from 0 to the peak over ``warmup`` steps, then cosine (or linear) decay from the peak
to ``min_lr_ratio`` · peak at the last step, or constant. The schedule is a pure function of
the step, so resuming needs only the step number.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qwen_cli.recipe import OptimSection, ScheduleSection


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups over trainable parameters: ≥2-D weights decay, 1-D ones do not."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def fused_supported(model: nn.Module) -> bool:
    """Fused AdamW exists for floating-point parameters on CPU and CUDA."""
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in model.parameters())


def build_optimizer(model: nn.Module, cfg: OptimSection) -> torch.optim.AdamW:
    """AdamW(β, ε, weight decay) over :func:`param_groups`; fused kernel when asked and possible."""
    fused = cfg.fused and fused_supported(model)
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
        fused=fused or None, foreach=None if fused else True,
    )


def warmup_steps(cfg: ScheduleSection, total_steps: int) -> int:
    """Warm-up length: ``warmup_steps`` if set, else ``warmup_ratio`` of the run."""
    if cfg.warmup_steps:
        return cfg.warmup_steps
    return int(round(cfg.warmup_ratio * total_steps))


def lr_at(step: int, peak: float, total_steps: int, cfg: ScheduleSection) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``."""
    warmup = warmup_steps(cfg, total_steps)
    if step < warmup:
        return peak * (step + 1) / warmup
    if cfg.decay == "constant":
        return peak
    span = max(total_steps - 1 - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if cfg.decay == "cosine" else 1.0 - progress
    return peak * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr

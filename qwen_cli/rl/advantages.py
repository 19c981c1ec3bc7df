"""Advantage estimation for PPO: generalised advantage estimation, whitening, running reward statistics.

Shapes follow the rollout: ``[B, T]`` per-token tensors over the response tokens, with a
boolean/0-1 ``mask`` marking real (not padding) positions. Tokens past the end of a response
carry no reward and no value, so GAE treats the first padded position as the episode's end.
"""

from __future__ import annotations

import torch


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), both ``[B, T]`` and 0 where ``mask`` is 0.

    ``δ_t = r_t + γ·V_{t+1}·m_{t+1} − V_t`` and ``A_t = δ_t + γλ·m_{t+1}·A_{t+1}``, scanned from
    the last position; returns are ``A_t + V_t`` (the value targets).
    """
    mask = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    next_mask = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value * next_mask - values[:, t]
        next_advantage = (delta + gamma * lam * next_mask * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
        next_value, next_mask = values[:, t], mask[:, t]
    return advantages, (advantages + values) * mask


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise to unit variance over the masked positions (and zero mean unless ``shift_mean`` is False)."""
    mask = mask.to(values.dtype)
    count = mask.sum().clamp(min=1.0)
    mean = (values * mask).sum() / count
    variance = (((values - mean) * mask) ** 2).sum() / count
    out = (values - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


class RunningMoments:
    """Running mean and standard deviation of a stream of scalars (rewards), merged batch by batch.

    The report normalises PPO rewards by a running mean; this keeps the exact mean and variance of
    everything seen so far (Chan et al.'s parallel update), so it does not depend on batch sizes.
    """

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: torch.Tensor) -> None:
        values = values.detach().double().flatten()
        n = values.numel()
        if n == 0:
            return
        batch_mean = values.mean().item()
        batch_m2 = ((values - batch_mean) ** 2).sum().item()
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta * delta * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        return (self.m2 / self.count) ** 0.5 if self.count else 1.0

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])

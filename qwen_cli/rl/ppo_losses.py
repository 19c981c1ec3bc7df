"""PPO's per-token maths: KL-shaped rewards, the clipped policy loss and the clipped value loss.

Tensors are ``[rollouts, response tokens]`` with ``mask`` marking real response tokens. Means
are over all masked tokens of the batch (every token weighs the same).
"""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def shaped_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                   kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token rewards, per-token KL estimate).

    Every response token is charged ``kl_coef · (log π(a) − log π_ref(a))`` (the sampled-token KL
    estimate); the sequence's (normalised) reward-model score is added at its last token.
    """
    mask = mask.to(logprobs.dtype)
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)
    rewards[torch.arange(len(scores)), last] += scores.to(rewards.dtype)
    return rewards * mask, kl


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(clipped surrogate loss, fraction of tokens where the clip was active)."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    return masked_mean(torch.maximum(unclipped, clipped), mask), masked_mean((clipped > unclipped).float(), mask)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(clipped value loss ``½·max((V − R)², (V_clip − R)²)``, clip fraction), with
    ``V_clip = V_old + clamp(V − V_old, ±clip)`` (report: value-loss clipping 0.15)."""
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_loss, clipped_loss), mask)
    return loss, masked_mean((clipped_loss > unclipped_loss).float(), mask)

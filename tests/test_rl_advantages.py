"""GAE, whitening and running reward moments against independent plain-Python references."""

from __future__ import annotations

import random

import torch

from qwen_cli.rl.advantages import RunningMoments, gae, whiten


def reference_gae(rewards, values, length, gamma, lam):
    """Textbook GAE on one episode of ``length`` steps (V = 0 after the end)."""
    advantages = [0.0] * length
    running = 0.0
    for t in reversed(range(length)):
        next_value = values[t + 1] if t + 1 < length else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    return advantages


def test_gae_matches_the_textbook_recursion_per_episode():
    rng = random.Random(0)
    lengths, width = [5, 2, 7], 7
    rewards = torch.tensor([[rng.uniform(-1, 1) for _ in range(width)] for _ in lengths], dtype=torch.float64)
    values = torch.tensor([[rng.uniform(-1, 1) for _ in range(width)] for _ in lengths], dtype=torch.float64)
    mask = torch.tensor([[t < n for t in range(width)] for n in lengths])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    for b, n in enumerate(lengths):
        expected = reference_gae(rewards[b].tolist(), values[b].tolist(), n, 0.9, 0.8)
        assert torch.allclose(adv[b, :n], torch.tensor(expected, dtype=torch.float64))
        assert torch.all(adv[b, n:] == 0) and torch.all(ret[b, n:] == 0)
        assert torch.allclose(ret[b, :n], adv[b, :n] + values[b, :n])


def test_gae_with_lambda_one_and_no_discount_is_reward_to_go_minus_value():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.2, 0.5, 0.1]])
    adv, _ = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    assert torch.allclose(adv, torch.tensor([[0.8, 0.5, 0.9]]))


def test_whiten_uses_only_masked_positions():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    out = whiten(values, mask)
    assert out[0, 3] == 0
    real = out[0, :3]
    assert abs(real.mean().item()) < 1e-6 and abs(real.pow(2).mean().item() - 1.0) < 1e-5


def test_running_moments_equal_the_statistics_of_everything_seen():
    data = torch.randn(1000, generator=torch.Generator().manual_seed(1)) * 3 + 2
    moments = RunningMoments()
    for chunk in data.split([1, 10, 300, 689]):
        moments.update(chunk)
    assert moments.count == 1000
    assert abs(moments.mean - data.double().mean().item()) < 1e-9
    assert abs(moments.std - data.double().std(unbiased=False).item()) < 1e-9
    restored = RunningMoments()
    restored.load_state_dict(moments.state_dict())
    assert (restored.count, restored.mean, restored.std) == (moments.count, moments.mean, moments.std)

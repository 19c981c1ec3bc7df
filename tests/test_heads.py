"""Scalar (value / reward) heads on the decoder."""

from __future__ import annotations

import torch

from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.model.heads import ScalarHeadModel


def small_model() -> ScalarHeadModel:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
    model = ScalarHeadModel(QwenModel(config))
    torch.nn.init.normal_(model.score.weight)  # a trained head, not the all-zero start
    return model.eval()


def test_values_are_the_score_of_the_final_hidden_states():
    model = small_model()
    ids = torch.randint(0, 64, (2, 6))
    hidden = model.backbone.hidden_states(ids)
    expected = hidden @ model.score.weight[0] + model.score.bias[0]
    assert torch.allclose(model.values(ids), expected, atol=1e-6)


def test_reward_is_read_at_the_end_token_and_ignores_what_follows():
    model = small_model()
    ids = torch.randint(0, 64, (2, 6))
    end = torch.tensor([3, 5])
    reward = model.pooled(ids, end)
    values = model.values(ids)
    assert torch.allclose(reward, torch.stack([values[0, 3], values[1, 5]]))
    changed = ids.clone()
    changed[0, 4:] = (changed[0, 4:] + 1) % 64  # tokens after row 0's end token: causal, so no effect
    assert torch.allclose(model.pooled(changed, end)[0], reward[0], atol=1e-6)


def test_new_head_starts_at_zero_and_trains_the_backbone():
    config = ModelConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
    model = ScalarHeadModel(QwenModel(config))
    ids = torch.randint(0, 64, (2, 5))
    assert torch.all(model.values(ids) == 0)
    torch.nn.init.normal_(model.score.weight)
    model.pooled(ids, torch.tensor([4, 2])).sum().backward()
    assert model.backbone.layers[0].attn.qkv_proj.weight.grad.abs().sum() > 0

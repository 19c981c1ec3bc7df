"""``[rm] added_layers``: a reward model deeper than the model it starts from, the new blocks starting as the
identity (``QwenModel.append_layers``)."""

from __future__ import annotations

import json

import torch
from rlhf_fixtures import separable_pairs, tiny_checkpoint, write_toml
from test_rlhf_reward import REWARD_RECIPE

from qwen_cli.checkpoint import load_model
from qwen_cli.checkpoint.reward_dir import load_reward_model
from qwen_cli.model import ModelConfig, QwenModel


def test_appended_layers_start_as_the_identity_and_extend_the_config():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=128, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                         layer_windows=[4, 0])
    model = QwenModel(config).eval()
    ids = torch.randint(0, 128, (2, 12))
    before = model(ids)
    model.append_layers(2)
    assert model.config.num_layers == 4 and model.config.layer_windows == [4, 0, 0, 0] and len(model.layers) == 4
    assert all(block.attn.config is model.config for block in model.layers)  # one config, as every layer reads it
    for block in model.layers[2:]:
        assert not block.attn.o_proj.weight.any() and not block.mlp.down_proj.weight.any()
        assert block.attn.qkv_proj.weight.std() > 0 and block.mlp.gate_up_proj.weight.std() > 0
    assert torch.equal(model(ids), before)


def test_a_reward_phase_with_added_layers_trains_them_and_writes_a_deeper_reward_model(tmp_path):
    from qwen_cli.commands.rlhf import reward

    base = tiny_checkpoint(tmp_path / "base")
    train = separable_pairs(tmp_path / "train.jsonl", 120, seed=1)
    test = separable_pairs(tmp_path / "separable.jsonl", 32, seed=2)
    text = REWARD_RECIPE.format(base=base, test=test, train=train, pmp="", pmp_steps=0)
    recipe = write_toml(tmp_path / "reward.toml", text.replace("steps = 30\n", "steps = 30\nadded_layers = 1\n"))
    torch.set_num_threads(1)
    assert reward(recipe, [], tmp_path / "run", False, False, False) == 0
    final = tmp_path / "run" / "rm" / "final"
    assert json.loads((final / "config.json").read_text())["num_hidden_layers"] == 3
    rm = load_reward_model(final)
    assert rm.backbone.layers[2].attn.o_proj.weight.abs().sum() > 0  # trained away from zero
    first = load_model(base).layers[0].attn.qkv_proj.weight
    assert not torch.equal(rm.backbone.layers[0].attn.qkv_proj.weight, first)  # the old blocks train too
    scores = json.loads((tmp_path / "run" / "scores.json").read_text())
    assert scores[0]["sets"]["separable"]["accuracy"] >= 0.95


def _reward_sums(final, pairs_file) -> torch.Tensor:
    """r_chosen + r_rejected of every test pair (0 for a reward model centred on each prompt)."""
    from qwen_cli.data.chat_template import ChatTemplate
    from qwen_cli.evaluation.reward.preference import load_test_pairs, pair_batch, pair_rewards
    from qwen_cli.tokenizer import load_tokenizer

    rm, tok = load_reward_model(final).eval(), load_tokenizer(str(final))
    pairs = load_test_pairs(pairs_file, ChatTemplate(tok), 64)
    with torch.no_grad():
        chosen, rejected = pair_rewards(rm, pair_batch(pairs, tok.eot_id))
    return chosen + rejected


def test_center_coef_pulls_each_pairs_rewards_around_zero(tmp_path):
    from qwen_cli.commands.rlhf import reward

    base = tiny_checkpoint(tmp_path / "base")
    train = separable_pairs(tmp_path / "train.jsonl", 120, seed=1)
    test = separable_pairs(tmp_path / "separable.jsonl", 32, seed=2)
    text = REWARD_RECIPE.format(base=base, test=test, train=train, pmp="", pmp_steps=0)
    torch.set_num_threads(1)
    sums = {}
    for coef in (0.0, 1.0):
        recipe = write_toml(tmp_path / f"reward{coef}.toml", text.replace("steps = 30\n", f"steps = 30\ncenter_coef = {coef}\n"))
        assert reward(recipe, [], tmp_path / f"run{coef}", False, False, False) == 0
        sums[coef] = _reward_sums(tmp_path / f"run{coef}" / "rm" / "final", test).abs().mean()
        scores = json.loads((tmp_path / f"run{coef}" / "scores.json").read_text())
        assert scores[0]["sets"]["separable"]["accuracy"] >= 0.95  # still separates the pairs
    assert sums[1.0] < 0.5 * sums[0.0]  # measured: 0.59 vs 1.82

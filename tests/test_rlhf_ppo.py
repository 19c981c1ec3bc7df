"""PPO: KL-shaped rewards, clipped losses, running-mean normalisation, value-only steps, two samples per
query, the pretraining gradient, and exact resume after SIGKILL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rlhf_fixtures import PPO_RECIPE, prompt_file, tiny_checkpoint, tiny_reward_model, write_toml
from safetensors.torch import load_file
from train_fixtures import run_cli_until_killed

from qwen_cli.checkpoint import train_state as ts
from qwen_cli.recipe import load_recipe
from qwen_cli.rl.ppo import PPORun
from qwen_cli.rl.ppo_config import SECTIONS
from qwen_cli.rl.ppo_losses import policy_loss, shaped_rewards, value_loss
from qwen_cli.rl.rollout import layout

ROOT = Path(__file__).resolve().parent.parent


def test_shaped_rewards_charge_kl_per_token_and_add_the_score_at_the_last_token():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    rewards, kl = shaped_rewards(torch.tensor([2.0, -1.0]), logprobs, ref, mask, kl_coef=0.04)
    assert torch.allclose(kl, torch.tensor([[0.5, -1.0, 0.0], [1.0, 0.0, 0.0]]))
    expected = torch.tensor([[-0.02, 0.04, 2.0], [-0.04, -1.0, 0.0]])
    assert torch.allclose(rewards, expected)


def test_value_loss_is_clipped_around_the_old_values():
    old = torch.tensor([[0.0, 0.0]])
    new = torch.tensor([[1.0, 0.1]])  # first moved 1.0 (clipped to 0.15), second 0.1 (inside the clip)
    returns = torch.tensor([[2.0, -1.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss, clipfrac = value_loss(new, old, returns, mask, clip=0.15)
    # token 1: max((1-2)^2, (0.15-2)^2) = 3.4225; token 2: max((0.1+1)^2, (0.1+1)^2) = 1.21
    assert loss.item() == pytest.approx(0.5 * (3.4225 + 1.21) / 2)
    assert clipfrac.item() == pytest.approx(0.5)


def test_policy_loss_clips_the_ratio():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 0.9]]))
    advantages = torch.tensor([[1.0, 1.0]])
    loss, clipfrac = policy_loss(new, old, advantages, torch.ones(1, 2, dtype=torch.bool), clip=0.2)
    assert loss.item() == pytest.approx(-(1.2 + 0.9) / 2)
    assert clipfrac.item() == pytest.approx(0.5)


def test_rollout_layout_left_pads_prompts_and_marks_actions():
    rollout = layout([[5, 6], [7]], [[1, 2], [3]], stopped=[True, False], end_id=9, pad_id=0)
    assert rollout.input_ids.tolist() == [[5, 6, 1, 2, 9], [0, 7, 3, 0, 0]]
    assert rollout.mask.tolist() == [[True, True, True], [True, False, False]]
    assert rollout.prompt_width == 2


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo")
    policy = tiny_checkpoint(root / "policy")
    return root, policy, tiny_reward_model(root / "reward", policy), prompt_file(root / "prompts.jsonl", 24, seed=0)


def ppo_recipe(models, shards, path: Path, steps: int = 4, value_only: int = 1, ptx: float = 0.5):
    root, policy, reward, prompts = models
    text = PPO_RECIPE.format(policy=policy, reward=reward, prompts=prompts, shards=shards, steps=steps,
                             value_only=value_only, ptx=ptx)
    return write_toml(path, text)


def run_ppo(recipe: Path, out: Path, resume: bool = False) -> tuple[int, dict]:
    torch.set_num_threads(1)
    return PPORun(load_recipe(recipe, sections=SECTIONS), out, resume=resume).run()


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "model.safetensors")


def test_value_only_steps_leave_the_policy_bit_identical(models, shards, tmp_path):
    recipe = ppo_recipe(models, shards, tmp_path / "ppo.toml", steps=2, value_only=2)
    code, record = run_ppo(recipe, tmp_path / "run")
    assert code == 0 and "policy_loss" not in record and record["value_loss"] > 0
    policy, final = weights(models[1]), weights(tmp_path / "run" / "final")
    assert all(torch.equal(policy[k], final[k]) for k in policy)
    value = load_file(tmp_path / "run" / "checkpoints" / "step_000002" / "value" / "model.safetensors")
    reward = weights(models[2])
    assert not torch.equal(value["score.weight"], reward["score.weight"])  # the value model did learn


def test_two_samples_per_query_and_running_reward_normalisation(models, shards, tmp_path):
    recipe = ppo_recipe(models, shards, tmp_path / "ppo.toml", steps=1, value_only=0)
    run = PPORun(load_recipe(recipe, sections=SECTIONS), tmp_path / "run")
    run._build()
    rollout, queries = run._rollout(0)
    assert len(queries) == 8 and all(queries[2 * i] is queries[2 * i + 1] for i in range(4))
    assert len({id(q) for q in queries}) == 4
    prompts = rollout.input_ids[:, : rollout.prompt_width]
    assert torch.equal(prompts[0::2], prompts[1::2])
    metrics = run._step(1)
    assert metrics["reward_norm"] == pytest.approx(0.0, abs=1e-5)  # this batch alone sets the running mean
    assert run.moments.count == 8


def test_ppo_updates_the_policy_and_writes_curves(models, shards, tmp_path):
    recipe = ppo_recipe(models, shards, tmp_path / "ppo.toml", steps=3, value_only=1)
    code, record = run_ppo(recipe, tmp_path / "run")
    assert code == 0
    for key in ("reward", "reward_norm", "kl", "value_loss", "policy_clipfrac", "value_clipfrac", "response_len",
                "pretrain_loss", "gold", "eval_gold", "eval_reward"):
        assert key in record, key
    policy, final = weights(models[1]), weights(tmp_path / "run" / "final")
    assert any(not torch.equal(policy[k], final[k]) for k in policy)
    assert (tmp_path / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps[0]["step"] == 0 and "eval_gold" in steps[0]  # held-out gold measured before training


def _ppo_cli(recipe: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "qwen_cli.cli", "rlhf", "ppo", str(recipe), "--out", str(out),
                             *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_exact(models, shards, tmp_path):
    recipe = ppo_recipe(models, shards, tmp_path / "ppo.toml", steps=6, value_only=1)
    assert run_ppo(recipe, tmp_path / "reference")[0] == 0
    out = tmp_path / "run"
    run_cli_until_killed(["rlhf", "ppo", str(recipe), "--out", str(out)], 3)  # checkpoint 2 exists, step 4's does not
    assert [step for step, _ in ts.list_checkpoints(out)] == [2]
    assert not (out / "final").exists()
    resumed = _ppo_cli(recipe, out, "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resumed from" in err
    assert (out / "final" / "model.safetensors").read_bytes() == \
        (tmp_path / "reference" / "final" / "model.safetensors").read_bytes()
    value = "checkpoints/step_000006/value/model.safetensors"
    assert (out / value).read_bytes() == (tmp_path / "reference" / value).read_bytes()


@pytest.mark.parametrize("size", ["1.8b", "7b", "14b"])
def test_paper_ppo_and_reward_recipes_carry_the_report_values(size):
    from qwen_cli.stages.reward import SECTIONS as REWARD_SECTIONS

    ppo = load_recipe(ROOT / "recipes" / f"qwen-{size}" / "ppo.toml", sections=SECTIONS).ppo
    assert (ppo.value_only_steps, ppo.samples_per_prompt, ppo.kl_coef, ppo.value_clip, ppo.top_p,
            ppo.policy_lr, ppo.value_lr, ppo.reward_norm) == (50, 2, 0.04, 0.15, 0.9, 1e-6, 5e-6, "mean")
    reward = load_recipe(ROOT / "recipes" / f"qwen-{size}" / "reward.toml", sections=REWARD_SECTIONS)
    assert (reward.rm.lr, reward.rm.epochs, reward.data.seq_len, reward.schedule.decay) == (3e-6, 1.0, 2048, "constant")
    assert reward.train.batch_tokens // reward.data.seq_len == 64


def test_tiny_rlhf_recipes_load():
    from qwen_cli.stages.dpo import SECTIONS as DPO_SECTIONS
    from qwen_cli.stages.reward import SECTIONS as REWARD_SECTIONS

    load_recipe(ROOT / "recipes" / "tiny" / "ppo.toml", sections=SECTIONS)
    load_recipe(ROOT / "recipes" / "tiny" / "reward.toml", sections=REWARD_SECTIONS)
    load_recipe(ROOT / "recipes" / "tiny" / "dpo.toml", sections=DPO_SECTIONS)


def test_ppo_climbs_a_reward_it_can_reach(models, shards, tmp_path, monkeypatch):
    """Oracle: with the reward = share of reply tokens below 128 (about a quarter for the random policy),
    PPO must raise it; a flipped advantage or ratio sign, or an update that ignores the reward, fails."""
    from qwen_cli.rl import rollout as rollout_module

    def ascii_share(reward, rollout, end_id, pad_id):
        replies = rollout.input_ids[:, rollout.prompt_width:]
        return ((replies < 128) & rollout.mask).float().sum(1) / rollout.mask.sum(1)

    monkeypatch.setattr(rollout_module, "end_scores", ascii_share)
    recipe = ppo_recipe(models, shards, tmp_path / "ppo.toml", steps=24, value_only=0, ptx=0.0)
    torch.set_num_threads(1)
    run = PPORun(load_recipe(recipe, ["ppo.policy_lr=1e-2", "logging.log_every=1", "ppo.eval_prompts=",
                                      "ppo.reward_norm=mean_std"],  # shares in [0, 1]: scaled up, as before
                             sections=SECTIONS), tmp_path / "run")
    assert run.run()[0] == 0
    rewards = [json.loads(line).get("reward") for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rewards = [r for r in rewards if r is not None]
    assert sum(rewards[:4]) / 4 < 0.35 and sum(rewards[-4:]) / 4 > 0.6, rewards

"""PPO's glue: how ``rl/rollout.py`` and ``rl/ppo.py`` connect the (separately tested) maths.

Each test pins one connection against an independent computation: rollout log-probabilities, values
and end scores against a plain forward pass over the unpadded sequence; the KL coefficient and the
normalised score reaching the rewards GAE sees; whitened advantages reaching the policy loss; the
pretraining term lowering the LM loss; policy updates starting exactly at ``value_only_steps``; the
reward normalisation the recipe names; and the defaults pinned to the report.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rlhf_fixtures import PPO_RECIPE, prompt_file, tiny_checkpoint, tiny_reward_model, write_toml

from qwen_cli.checkpoint import load_model
from qwen_cli.checkpoint.reward_dir import load_reward_model
from qwen_cli.recipe import load_recipe
from qwen_cli.rl import ppo as ppo_module
from qwen_cli.rl.ppo import PPORun
from qwen_cli.rl.ppo_config import SECTIONS, PPOSection
from qwen_cli.rl.rollout import layout, score

ROOT = Path(__file__).resolve().parent.parent
END, PAD = 200, 201


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue")
    policy = tiny_checkpoint(root / "policy")
    return root, policy, tiny_reward_model(root / "reward", policy), prompt_file(root / "prompts.jsonl", 24, seed=0)


def make_run(models, shards, tmp_path: Path, *overrides: str, steps: int = 4, value_only: int = 0,
             ptx: float = 0.0) -> PPORun:
    root, policy, reward, prompts = models
    text = PPO_RECIPE.format(policy=policy, reward=reward, prompts=prompts, shards=shards, steps=steps,
                             value_only=value_only, ptx=ptx)
    torch.set_num_threads(1)
    recipe = load_recipe(write_toml(tmp_path / "ppo.toml", text), ["ppo.eval_prompts=", *overrides], sections=SECTIONS)
    run = PPORun(recipe, tmp_path / "run")
    run._build()
    return run


def perturb(model: torch.nn.Module, seed: int = 3, scale: float = 0.05) -> None:
    """Move a model away from its copy (so the policy differs from the reference and KL is not zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)


# ----- rollout tensors against a plain forward pass --------------------------------------

def test_rollout_logprobs_values_and_end_scores_match_a_plain_forward_pass(models):
    _, policy_dir, reward_dir, _ = models
    torch.manual_seed(0)
    policy, reference = load_model(policy_dir).eval(), load_model(policy_dir).eval()
    perturb(reference)
    value, reward = load_reward_model(reward_dir), load_reward_model(reward_dir)
    perturb(value, seed=4, scale=0.5)
    prompts = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]
    responses = [[20, 21, 22], [23], [24, 25, 26, 27]]
    stopped = [True, True, False]  # the last was cut at max_new_tokens: no end token, one appended for the RM
    rollout = layout(prompts, responses, stopped, END, PAD)
    score(rollout, policy, reference, value, reward, END, PAD, chunk=2)
    for row, (prompt, response, stop) in enumerate(zip(prompts, responses, stopped, strict=True)):
        actions = response + [END] if stop else response
        ids = torch.tensor([prompt + actions])
        with torch.no_grad():
            for model, got in ((policy, rollout.logprobs), (reference, rollout.ref_logprobs)):
                logp = torch.log_softmax(model(ids).float(), dim=-1)[0]
                want = torch.stack([logp[len(prompt) - 1 + t, a] for t, a in enumerate(actions)])
                assert torch.allclose(got[row, : len(actions)], want, atol=1e-5), (row, got[row], want)
                assert torch.all(got[row, len(actions):] == 0)
            values = value.values(ids)[0]
            want = torch.stack([values[len(prompt) - 1 + t] for t in range(len(actions))])
            assert torch.allclose(rollout.values[row, : len(actions)], want, atol=1e-5)
            scored = torch.tensor([prompt + response + [END]])  # the RM reads the end token, appended if cut
            assert rollout.scores[row].item() == pytest.approx(reward.values(scored)[0, -1].item(), abs=1e-5)
    assert len({round(s, 4) for s in rollout.scores.tolist()}) == 3  # the rows' scores differ: no row read another's


# ----- what reaches GAE and the policy loss ----------------------------------------------

def spy(monkeypatch, name: str) -> list[tuple]:
    """Record the arguments of ``qwen_cli.rl.ppo.<name>`` (still calling it)."""
    calls: list[tuple] = []
    real = getattr(ppo_module, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(ppo_module, name, wrapper)
    return calls


@pytest.mark.parametrize("norm", ["mean", "mean_std", "none"])
def test_gae_sees_the_normalised_score_at_the_last_token_minus_kl_coef_times_kl(models, shards, tmp_path, monkeypatch,
                                                                                 norm):
    run = make_run(models, shards, tmp_path, "ppo.kl_coef=0.5", f"ppo.reward_norm={norm}")
    perturb(run.policy)
    run.moments.update(torch.tensor([3.0, 5.0]))  # earlier batches: mean 4, std 1 before this step
    gae_calls = spy(monkeypatch, "gae")
    captured = {}
    rollout_fn = run._rollout

    def keep(step):
        captured["rollout"], queries = rollout_fn(step)
        return captured["rollout"], queries

    monkeypatch.setattr(run, "_rollout", keep)
    run._step(0)
    rollout = captured["rollout"]
    raw = rollout.scores.double()
    seen = torch.cat([torch.tensor([3.0, 5.0], dtype=torch.float64), raw])
    mean, std = seen.mean(), seen.std(unbiased=False)
    expected_score = {"mean": raw - mean, "mean_std": (raw - mean) / std, "none": raw}[norm]
    mask = rollout.mask.double()
    kl = (rollout.logprobs - rollout.ref_logprobs).double() * mask
    assert kl.abs().sum() > 0.1  # the policy differs from the reference
    expected = -0.5 * kl
    last = mask.sum(1).long() - 1
    expected[torch.arange(len(raw)), last] += expected_score
    rewards = gae_calls[0][0].double()
    assert torch.allclose(rewards, expected * mask, atol=1e-4)


def test_the_policy_loss_sees_whitened_advantages(models, shards, tmp_path, monkeypatch):
    run = make_run(models, shards, tmp_path, "ppo.epochs=1")
    calls = spy(monkeypatch, "policy_loss")
    run._step(0)
    advantages = torch.cat([c[2] for c in calls])
    mask = torch.cat([c[3] for c in calls]).bool()
    assert mask.sum() > 4
    assert advantages[mask].mean().item() == pytest.approx(0.0, abs=1e-4)
    assert advantages[mask].std(unbiased=False).item() == pytest.approx(1.0, abs=1e-3)


def test_the_value_loss_clips_around_the_rollout_values_at_the_recipe_clip(models, shards, tmp_path, monkeypatch):
    run = make_run(models, shards, tmp_path, "ppo.value_clip=0.07", "ppo.epochs=1", "ppo.mini_batch_size=8")
    calls = spy(monkeypatch, "value_loss")
    captured = {}
    rollout_fn = run._rollout
    monkeypatch.setattr(run, "_rollout", lambda step: captured.setdefault("r", rollout_fn(step)))
    run._step(0)
    (args,) = calls  # one mini batch of all 8 rollouts
    rollout = captured["r"][0]
    assert args[4] == 0.07
    assert torch.equal(args[1].sort(0).values, rollout.values.sort(0).values)  # old values: the rollout's


# ----- updates ---------------------------------------------------------------------------

def test_policy_updates_start_exactly_at_value_only_steps(models, shards, tmp_path):
    run = make_run(models, shards, tmp_path, value_only=2)
    start = {k: v.clone() for k, v in run.policy.state_dict().items()}
    changed = []
    for step in range(3):
        metrics = run._step(step)
        changed.append(any(not torch.equal(start[k], v) for k, v in run.policy.state_dict().items()))
        assert ("policy_loss" in metrics) == (step >= 2)
    assert changed == [False, False, True]


def test_the_pretraining_term_lowers_the_lm_loss(models, shards, tmp_path, monkeypatch):
    """With the PPO policy loss switched off, the policy's only gradient is ``pretrain_coef`` × LM loss."""
    run = make_run(models, shards, tmp_path, "ppo.policy_lr=3e-3", "ppo.pretrain_sequences=4", "ppo.epochs=4",
                   ptx=1.0)
    monkeypatch.setattr(ppo_module, "policy_loss", lambda new, old, adv, mask, clip: ((new * 0).sum(), new.new_zeros(())))
    batch = next(run.pretrain)

    def lm_loss() -> float:
        with torch.no_grad():
            logits = run.policy(batch["input_ids"]).float()
            return torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(),
                                                     ignore_index=-100).item()

    before = lm_loss()
    run._step(0)
    assert lm_loss() < before - 0.05, (before, lm_loss())


def test_ppo_section_defaults_are_the_report_values_of_the_paper_recipes():
    """The defaults a recipe falls back on are the report's (§3.2.2), and every paper recipe states them."""
    defaults = PPOSection()
    report = {"value_only_steps": 50, "samples_per_prompt": 2, "kl_coef": 0.04, "reward_norm": "mean",
              "value_clip": 0.15, "top_p": 0.9, "policy_lr": 1e-6, "value_lr": 5e-6}
    for size in ("1.8b", "7b", "14b"):
        paper = load_recipe(ROOT / "recipes" / f"qwen-{size}" / "ppo.toml", sections=SECTIONS).ppo
        for key, value in report.items():
            assert getattr(defaults, key) == value, key
            assert getattr(paper, key) == value, (size, key)


def test_the_toy_recipe_changes_only_what_the_toy_scale_needs():
    """The KL bound of `make demo-rlhf` comes from the learning rate's decay, not from a larger KL
    coefficient or a different reward normalisation: those stay the report's."""
    toy = load_recipe(ROOT / "recipes" / "tiny" / "arith_ppo.toml", sections=SECTIONS)
    kept = {"samples_per_prompt": 2, "kl_coef": 0.04, "reward_norm": "mean", "value_clip": 0.15, "top_p": 0.9}
    assert {key: getattr(toy.ppo, key) for key in kept} == kept
    assert (toy.schedule.decay, toy.schedule.min_lr_ratio) == ("linear", 0.0)


def test_gold_exact_match_reads_each_whole_reply():
    from rlhf_fixtures import byte_tokenizer

    from qwen_cli.evaluation.reward.preference import exact_match

    tokenizer = byte_tokenizer()
    replies = [tokenizer.encode(text) for text in ("94", "The sum is 104", "49", "1")]
    assert exact_match(tokenizer, replies, ["94", "104", "94", "10"]) == 0.5
    assert exact_match(tokenizer, [], []) == 0.0

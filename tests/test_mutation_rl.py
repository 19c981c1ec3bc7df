"""Behaviour of ``qwen_cli/rl`` that a one-line mutation sweep (issue 26) found unpinned.

Unit checks on the PPO maths' edge cases and the rollout layout, and a few PPO-loop connections
(which prompts a step takes, its sampling seed, the value model's start, the LR schedule, the
value coefficient, the pretraining loss) on the tiny byte-tokenizer models of ``rlhf_fixtures``.
"""

from __future__ import annotations

import inspect
import json
import random
from types import SimpleNamespace

import pytest
import torch
from rlhf_fixtures import prompt_file, tiny_checkpoint, tiny_reward_model
from test_ppo_glue import make_run
from test_rl_toy_task import MEASURED

from qwen_cli.errors import UserError
from qwen_cli.rl import curves, toy_report
from qwen_cli.rl import ppo as ppo_module
from qwen_cli.rl import rollout as rollout_module
from qwen_cli.rl.advantages import RunningMoments, whiten
from qwen_cli.rl.pairs import arithmetic, build, mbpp, texts
from qwen_cli.rl.pairs.benchmarks import wrong_final_answer
from qwen_cli.rl.pairs.common import perturb_int
from qwen_cli.rl.ppo import PPORun
from qwen_cli.rl.ppo_losses import masked_mean

# each test takes about a second on one core (tiny models; the module fixture builds them once)
pytestmark = pytest.mark.timeout(60)

END, PAD = 200, 201


# ----- maths edge cases ------------------------------------------------------------------
def test_an_empty_mask_gives_zeros_not_nan():
    values, empty = torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2, dtype=torch.bool)
    assert masked_mean(values, empty).item() == 0.0
    assert torch.equal(whiten(values, empty), torch.zeros(1, 2))


def test_running_moments_divide_by_one_before_any_reward():
    assert RunningMoments().std == 1.0


# ----- rollout ---------------------------------------------------------------------------
def test_a_response_cut_at_max_new_tokens_gets_no_end_token_action(monkeypatch):
    monkeypatch.setattr(rollout_module, "generate", lambda policy, prompts, n, **kw: [[5, 6, 7], [8]])
    rollout = rollout_module.sample(None, [[1, 2], [3]], 3, 0.9, 1.0, END, PAD, seed=0)
    assert rollout.input_ids.tolist() == [[1, 2, 5, 6, 7], [PAD, 3, 8, END, PAD]]
    assert rollout.mask.sum(1).tolist() == [3, 2]


# ----- the PPO loop ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("mutation_rl")
    policy = tiny_checkpoint(root / "policy")
    return root, policy, tiny_reward_model(root / "reward", policy), prompt_file(root / "prompts.jsonl", 24, seed=0)


class _Sampled(Exception):
    pass


def test_each_step_takes_the_next_prompts_of_the_permutation_with_its_own_seed(models, shards, tmp_path, monkeypatch):
    run = make_run(models, shards, tmp_path)
    calls = []

    def record(policy, prompts, *args, seed):
        calls.append((prompts, seed))
        raise _Sampled

    monkeypatch.setattr(ppo_module, "sample", record)
    per_step = run.cfg.prompts_per_step
    for step in (0, 1, 0):
        with pytest.raises(_Sampled):
            run._rollout(step)
        expected = [run.prompts[run.order[step * per_step + i]].ids for i in range(per_step)]
        assert calls[-1][0] == [ids for ids in expected for _ in range(run.cfg.samples_per_prompt)]
    assert calls[0][1] != calls[1][1] and calls[0][1] == calls[2][1]  # seeded per step, reproducibly


def test_prompts_without_an_answer_have_no_gold(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "no gold here"}) + "\n" + json.dumps({"prompt": "two?", "answer": 2}) + "\n")
    run = PPORun.__new__(PPORun)
    run.policy = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=64))
    run.cfg = SimpleNamespace(max_new_tokens=8)
    run.template = SimpleNamespace(prompt=lambda messages, max_len: [1, 2, 3])
    run.recipe = SimpleNamespace(source="ppo.toml")
    assert [p.answer for p in run._prompts([str(path)])] == [None, "2"]


def test_the_value_model_starts_from_the_reward_model_by_default(models, shards, tmp_path):
    run = make_run(models, shards, tmp_path)
    reward_state = run.reward.state_dict()
    assert all(torch.equal(v, reward_state[k]) for k, v in run.value.state_dict().items())


def test_the_learning_rate_follows_the_schedule(models, shards, tmp_path):
    run = make_run(models, shards, tmp_path, "schedule.warmup_steps=4")
    metrics = run._step(0)
    assert metrics["lr_factor"] == pytest.approx(0.25)
    assert all(g["lr"] == pytest.approx(g["peak_lr"] * 0.25) for g in run.optimizer.param_groups)


def test_the_value_coefficient_scales_the_value_gradient(models, shards, tmp_path):
    norms = []
    for coef in (1.0, 2.0):
        (tmp_path / str(coef)).mkdir()
        run = make_run(models, shards, tmp_path / str(coef), f"ppo.value_coef={coef}", "ppo.epochs=1",
                       "ppo.mini_batch_size=8", value_only=4)
        norms.append(run._step(0)["grad_norm"])
    assert norms[1] == pytest.approx(2 * norms[0], rel=1e-4)


def test_the_pretraining_loss_is_the_mean_token_cross_entropy(models, shards, tmp_path):
    run = make_run(models, shards, tmp_path, ptx=1.0)
    batch = next(run.pretrain)
    run.pretrain = iter([batch])
    with torch.no_grad():
        logits = run.policy(batch["input_ids"]).float()
        expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
        assert run._pretrain_loss().item() == pytest.approx(expected.item(), rel=1e-4)


def test_the_pretraining_loss_is_weighted_by_pretrain_coef(models, shards, tmp_path, monkeypatch):
    """Policy and value losses without gradient: what is left is ``pretrain_coef`` × d(LM loss)."""
    run = make_run(models, shards, tmp_path, "ppo.epochs=1", "ppo.mini_batch_size=8", ptx=0.5)
    monkeypatch.setattr(ppo_module, "policy_loss", lambda new, old, adv, mask, clip: ((new * 0).sum(), new.new_zeros(())))
    monkeypatch.setattr(ppo_module, "value_loss", lambda new, old, ret, mask, clip: ((new * 0).sum(), new.new_zeros(())))
    weight = next(run.policy.parameters())
    monkeypatch.setattr(run, "_pretrain_loss", lambda: weight.sum())  # gradient: ones on this one tensor
    assert run._step(0)["grad_norm"] == pytest.approx(0.5 * weight.numel() ** 0.5, rel=1e-5)


def test_gae_gets_the_recipe_gamma_and_lambda(models, shards, tmp_path, monkeypatch):
    run = make_run(models, shards, tmp_path, "ppo.gamma=0.9", "ppo.lam=0.8")
    real, bound = ppo_module.gae, []

    def spy(*args, **kwargs):
        bound.append(inspect.signature(real).bind(*args, **kwargs).arguments)
        return real(*args, **kwargs)

    monkeypatch.setattr(ppo_module, "gae", spy)
    run._step(0)
    assert (bound[0]["gamma"], bound[0]["lam"]) == (0.9, 0.8)


def test_the_kl_metric_is_summed_over_each_response_then_averaged(models, shards, tmp_path, monkeypatch):
    run = make_run(models, shards, tmp_path)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # move the policy off the reference, so the KL is not zero
        for p in run.policy.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    real, seen = ppo_module.shaped_rewards, []

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out[1])
        return out

    monkeypatch.setattr(ppo_module, "shaped_rewards", spy)
    kl = run._step(0)["kl"]
    assert abs(kl) > 1e-3 and kl == pytest.approx(seen[0].sum(1).mean().item(), rel=1e-5)


def test_held_out_evaluation_is_greedy(models, shards, tmp_path, monkeypatch):
    run = make_run(models, shards, tmp_path, f"ppo.eval_prompts={models[3]}")
    real, bound = ppo_module.sample, []

    def spy(*args, **kwargs):
        bound.append(inspect.signature(real).bind(*args, **kwargs).arguments)
        return real(*args, **kwargs)

    monkeypatch.setattr(ppo_module, "sample", spy)
    assert "eval_reward" in run.evaluate()
    assert bound[0]["temperature"] == 0.0


def test_the_last_step_is_always_logged_and_saved_only_by_the_finish(models, shards, tmp_path, monkeypatch):
    run = make_run(models, shards, tmp_path, "logging.log_every=3", "checkpoint.every=2")
    saved, written = [], []
    monkeypatch.setattr(run, "_step", lambda step: {"reward": 1.0})
    monkeypatch.setattr(run, "_save", saved.append)
    monkeypatch.setattr(run, "_finish", lambda writer: {})
    code, record = run._loop(0, SimpleNamespace(write=written.append))
    assert code == 0 and record["step"] == run.total_steps == 4
    assert [r["step"] for r in written] == [3, 4] and saved == [2]


# ----- curves, the toy demo's floors, pair sources -----------------------------------------
def test_curves_draw_one_panel_per_metric_present(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    keys = ("reward", "reward_norm", "kl", "value_loss", "policy_clipfrac")  # five panels: two rows of four
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": step, **dict.fromkeys(keys, 0.5 * step)}) + "\n" for step in (1, 2)))
    figures = []
    real = plt.subplots
    monkeypatch.setattr(plt, "subplots", lambda *a, **kw: figures.append(real(*a, **kw)) or figures[-1])
    curves.plot_curves(metrics, tmp_path / "curves.png")
    titles = dict(curves.PANELS)
    drawn = [ax.get_title() for ax in figures[0][1].flat if ax.get_title()]
    assert drawn == [titles[k] for k in keys] and figures[0][1].shape == (2, 4)


@pytest.mark.parametrize("changed", [
    {"sft_gold": toy_report.SFT_RANGE[0]}, {"rm_accuracy": toy_report.RM_FLOOR}, {"ppo_max_kl": toy_report.KL_CEILING},
    {"sft_gold": 0.21, "ppo_gold": 0.31},  # 0.31 - 0.21 == 0.10 exactly in floating point: a gain of PPO_GAIN
])
def test_the_demo_floors_are_met_at_their_bounds(changed):
    assert toy_report.PPO_GAIN == 0.10
    assert toy_report.failures({**MEASURED, **changed}) == []


@pytest.mark.parametrize(("value", "options"), [
    (12, {2, 9, 10, 11, 13, 14, 15, 21, 22}),  # off by 1-3 or 10, digits swapped
    (10, {0, 7, 8, 9, 11, 12, 13, 20}),  # no swap to "01"
    (3, {0, 1, 2, 4, 5, 6, 13}),  # never negative for a non-negative value
    (-12, {-22, -21, -15, -14, -13, -11, -10, -9, -2}),  # a negative value keeps its sign
])
def test_near_misses_are_the_documented_perturbations(value, options):
    assert {perturb_int(value, random.Random(seed)) for seed in range(400)} == options


def test_the_limit_may_ask_for_every_distinct_question():
    assert len(arithmetic.addition(None, arithmetic.DISTINCT["+"], random.Random(0)).pairs) == 9801
    with pytest.raises(UserError, match="9801 distinct"):
        arithmetic.addition(None, 9802, random.Random(0))


def test_a_limit_below_one_is_refused():
    with pytest.raises(UserError, match="at least 1"):
        build("addition", limit=0)


def test_mbpp_mutants_drop_the_last_character_of_a_one_character_string():
    assert "s = ''\n" in mbpp.mutants("s = 'a'\n", random.Random(0))


def test_mbpp_keeps_the_first_failing_mutant_and_stops_trying(monkeypatch):
    ran = []

    def run_programs(programs, limits, on_done):
        ran.extend(programs)
        for _ in programs:
            on_done()
        return [SimpleNamespace(passed="fails" not in program) for program in programs]

    monkeypatch.setattr(mbpp, "run_programs", run_programs)
    monkeypatch.setattr(mbpp, "mbpp_program", lambda task, code: code)
    found = mbpp._first_failing([{}], ["reference"], [["fails 1", "fails 2"]])
    assert found == {0: "fails 1"} and ran == ["reference", "fails 1"]


def test_chat_mismatch_never_rejects_with_a_reply_the_prompt_also_has(tmp_path):
    def chat(prompt: str, reply: str) -> str:
        return json.dumps({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]})

    data = tmp_path / "chat.jsonl"
    data.write_text("\n".join([chat("A", "x"), chat("A", "y"), chat("B", "x")]) + "\n")
    for seed in range(5):  # B's reply "x" is also one of A's: only B (x over y) has a reply from elsewhere
        built = texts.chat_mismatch(data, None, random.Random(seed))
        assert [(p.prompt, p.chosen, p.rejected) for p in built.pairs] == [("B", "x", "y")]


def test_a_gsm8k_near_miss_also_changes_the_number_in_the_last_reasoning_line():
    wrong = wrong_final_answer("She buys 3 bags of 6.\nSo she has 3 * 6 = 18 apples.\n#### 18", random.Random(0))
    *_, reasoning, final = wrong.split("\n")
    number = final.removeprefix("#### ")
    assert number != "18" and reasoning == f"So she has 3 * 6 = {number} apples."


def test_no_gradient_is_left_over_after_a_step(models, shards, tmp_path):
    run = make_run(models, shards, tmp_path)
    run._step(0)
    assert all(p.grad is None for p in run.params)


def test_a_resumed_run_gets_back_the_running_reward_moments(models, shards, tmp_path):
    run = make_run(models, shards, tmp_path)
    run.moments.update(torch.tensor([1.0, 3.0, 8.0]))
    run._save(2)
    resumed = PPORun(run.recipe, run.run_dir, resume=True)
    resumed._build()
    assert resumed._restore() == 2
    assert resumed.moments.state_dict() == run.moments.state_dict()

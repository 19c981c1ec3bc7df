"""The alignment recipes' numbers: the paper recipes carry the report's values (the reward model's
two phases, Math-Qwen's optimiser), the reward stage turns epochs into the right step count, and
the toy task's recipes load."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen_cli.recipe import build_recipe, load_recipe, read_toml
from qwen_cli.stages.reward import SECTIONS as REWARD_SECTIONS
from qwen_cli.stages.reward import phase_recipe
from qwen_cli.stages.specialize.recipe import TOP_SECTIONS, _stage_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


@pytest.mark.parametrize("size", ["1.8b", "7b", "14b"])
def test_paper_reward_recipes_train_both_phases_at_the_report_rate(size):
    recipe = load_recipe(RECIPES / f"qwen-{size}" / "reward.toml", sections=REWARD_SECTIONS)
    assert (recipe.pmp.lr, recipe.pmp.epochs, recipe.rm.lr, recipe.rm.epochs) == (3e-6, 1.0, 3e-6, 1.0)


@pytest.mark.parametrize("size", ["7b", "14b"])
def test_paper_math_recipes_use_the_sft_optimiser(size):
    path = RECIPES / f"qwen-{size}" / "math.toml"
    data = read_toml(path)
    tables, defaults = data.pop("stage"), data.pop("defaults", {})
    build_recipe(data, str(path), sections=TOP_SECTIONS)
    for table in tables:
        _, _, recipe = _stage_recipe(table, defaults, path, [])
        assert (list(recipe.optim.betas), recipe.optim.eps, recipe.optim.weight_decay) == ([0.9, 0.95], 1e-8, 0.1)


@pytest.mark.parametrize(("pairs", "epochs", "steps"), [(100, 1.0, 4), (96, 1.0, 3), (100, 2.0, 7), (10, 1.0, 1)])
def test_reward_phase_steps_are_epochs_over_pairs_per_step(pairs, epochs, steps):
    recipe = load_recipe(RECIPES / "qwen-7b" / "reward.toml", [f"pmp.epochs={epochs}", "data.seq_len=128",
                                                                 "train.batch_tokens=4096"], sections=REWARD_SECTIONS)
    phase = phase_recipe(recipe, "pmp", pairs, "base")  # 32 pairs of 128 tokens a step
    assert (phase.train.steps, phase.optim.lr, phase.init.checkpoint) == (steps, 3e-6, "base")


def test_toy_task_recipes_load():
    from qwen_cli.rl.ppo_config import SECTIONS as PPO_SECTIONS
    from qwen_cli.stages.dpo import SECTIONS as DPO_SECTIONS
    from qwen_cli.stages.sft import SECTIONS as SFT_SECTIONS

    for name, sections in (("arith_sft", SFT_SECTIONS), ("arith_reward", REWARD_SECTIONS),
                           ("arith_ppo", PPO_SECTIONS), ("arith_dpo", DPO_SECTIONS)):
        load_recipe(RECIPES / "tiny" / f"{name}.toml", sections=sections)

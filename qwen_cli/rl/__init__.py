"""Reinforcement learning from human feedback: PPO's rollout-and-update loop and its maths.

The rule (checked by import-linter in the test suite): rl/ builds on the core — the model and
its heads, ``train/`` (optimiser, schedule, checkpointing, distributed, progress, run control),
``inference/`` (the generation engine for rollouts), ``checkpoint/`` — and nothing in the core
imports rl/. Reward-model and DPO training are ordinary stages (``qwen_cli.stages``) on the shared
trainer; only PPO, which alternates generation and several models' updates, has its own loop here.

Modules: ``advantages`` (GAE, whitening, running reward normalisation), ``ppo_losses`` (KL-shaped
rewards, clipped policy and value losses), ``rollout`` (sampling with the generation engine and
scoring with the four models), ``ppo`` (the loop, checkpoints, resume), ``ppo_config`` (its recipe),
``curves`` (the PNG) and ``pairs/`` (comparison sets built from real data: ``qwen rlhf pairs``).
"""

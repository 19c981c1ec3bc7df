"""Reinforcement learning from human feedback: PPO's rollout-and-update loop and its maths.

The rule (checked by import-linter in the test suite): rl/ builds on the core — the model and
its heads, ``train/`` (optimiser, schedule, checkpointing, distributed, progress, run control),
``inference/`` (the generation engine for rollouts), ``checkpoint/`` — and nothing in the core
imports rl/. Reward-model and DPO training are ordinary stages (``qwen_cli.stages``) on the shared
trainer; only PPO, which alternates generation and several models' updates, has its own loop here.

``advantages`` holds the estimators PPO needs (GAE, whitening, running reward normalisation).
"""

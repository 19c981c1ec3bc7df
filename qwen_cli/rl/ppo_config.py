"""The recipe of ``qwen rlhf ppo``: the four models and every PPO setting of report §3.2.2.

Sections: ``[models]`` (policy = the SFT model, also the frozen reference; the frozen reward
model; where the value model starts), ``[ppo]`` (below), ``[data]`` (pretraining shards mixed
into the policy gradient against the alignment tax, ``data.shards`` or ``data.sources``), and the
base ``optim`` (betas, eps, weight decay, clipping: the learning rates are ``ppo.policy_lr`` /
``ppo.value_lr``), ``schedule``, ``train`` (``steps``, ``seed``, ``device``, ``dtype``,
``micro_batch_size`` = rows per scoring forward), ``checkpoint`` and ``logging``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from qwen_cli.data.chat_template import DEFAULT_SYSTEM
from qwen_cli.model.config import ABOVE_ZERO, NON_NEGATIVE, POSITIVE, Range
from qwen_cli.recipe import BASE_SECTIONS, DataSection, ranged

UNIT = Range(0, 1)  # [0, 1]
TOP_P = Range(0, 1, low_open=True)  # (0, 1]


@dataclass
class ModelsSection:
    """The four models: policy and reference from ``policy``, the reward model, the value model's start."""

    policy: str = ""  # the SFT chat model directory
    reward: str = ""  # a reward model directory from `qwen rlhf reward`
    value_init: Literal["reward", "policy"] = "reward"  # the value model's backbone and head start


@dataclass
class PPOSection:
    """PPO. Report values where it gives them (§3.2.2); the others are common defaults."""

    prompts: list[str] = field(default_factory=list)  # JSONL of {"prompt": ...} (an "answer" enables gold scoring)
    eval_prompts: str = ""  # held-out prompts with "answer": greedy gold exact-match + reward, start and end
    eval_limit: int = ranged(64, NON_NEGATIVE)  # held-out prompts scored (0: all)
    default_system: str = DEFAULT_SYSTEM  # the system turn of prompts that bring none (as data.default_system)
    prompts_per_step: int = ranged(16, POSITIVE)  # queries per rollout batch
    samples_per_prompt: int = ranged(2, POSITIVE)  # report: two responses per query
    value_only_steps: int = ranged(50, NON_NEGATIVE)  # report: 50 value-only steps before policy updates
    kl_coef: float = ranged(0.04, NON_NEGATIVE)  # report: KL coefficient 0.04 (per-token penalty)
    # report: rewards "normalized based on the running mean" (mean); mean_std also divides by the running std
    reward_norm: Literal["mean", "mean_std", "none"] = "mean"
    value_clip: float = ranged(0.15, ABOVE_ZERO)  # report: value-loss clipping 0.15
    policy_clip: float = ranged(0.2, ABOVE_ZERO)  # not in the report: PPO's usual ratio clip
    top_p: float = ranged(0.9, TOP_P)  # report: policy top-p 0.9
    temperature: float = ranged(1.0, ABOVE_ZERO)
    max_new_tokens: int = ranged(128, POSITIVE)
    policy_lr: float = ranged(1e-6, ABOVE_ZERO)  # report: 1e-6
    value_lr: float = ranged(5e-6, ABOVE_ZERO)  # report: 5e-6
    gamma: float = ranged(1.0, UNIT)
    lam: float = ranged(0.95, UNIT)
    epochs: int = ranged(1, POSITIVE)  # optimisation passes over each rollout batch
    mini_batch_size: int = ranged(8, POSITIVE)  # rollouts per optimizer update
    value_coef: float = ranged(1.0, ABOVE_ZERO)
    pretrain_coef: float = ranged(0.0, NON_NEGATIVE)  # weight of the pretraining LM loss (0: off)
    pretrain_sequences: int = ranged(8, POSITIVE)  # pretraining sequences per policy update


SECTIONS: dict[str, type] = {**BASE_SECTIONS, "models": ModelsSection, "ppo": PPOSection, "data": DataSection}

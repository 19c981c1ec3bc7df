"""Direct preference optimisation (Rafailov et al., 2023): the policy learns from comparisons directly.

``loss = -log σ(β · [(log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r))])`` per pair, with
``log π(y)`` the summed log-probability of a reply's tokens (its closing ``<|im_end|>`` included)
after the ChatML prompt. The policy and the frozen reference both start from ``init.checkpoint``
(an SFT model); the reference's log-probabilities are computed once per micro batch, under
``no_grad``, for the chosen and rejected rows together. The reference is a full copy on every rank
(it is not sharded). Data, batching and the "one pair = one sequence" rule are the reward stage's
(:mod:`qwen_cli.stages.reward`); the output is a chat model directory like SFT's. At the end the
held-out ``data.test`` sets are scored for the starting model and the result (how often each
prefers the chosen reply), side by side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console

from qwen_cli.checkpoint import load_model
from qwen_cli.data.chat_template import ChatTemplate
from qwen_cli.errors import UserError
from qwen_cli.evaluation.preference import reply_logprobs
from qwen_cli.evaluation.reward_report import render, score_checkpoint
from qwen_cli.fsutil import atomic_file
from qwen_cli.model import QwenModel
from qwen_cli.model.config import ABOVE_ZERO
from qwen_cli.recipe import BASE_SECTIONS, Recipe, ranged
from qwen_cli.stages.lm import LanguageModelStage
from qwen_cli.stages.reward import PairData, PairDataSection, PairStage
from qwen_cli.tokenizer import load_tokenizer
from qwen_cli.train.stage import StageModel

SCORES_FILE = "scores.json"


@dataclass
class DPODataSection(PairDataSection):
    """Preference JSONL files to train on (plus the reward stage's row and test-set keys)."""

    train: list[str] = field(default_factory=list)


@dataclass
class DPOSection:
    beta: float = ranged(0.1, ABOVE_ZERO)  # strength of the implicit KL constraint to the reference


SECTIONS: dict[str, type] = {**BASE_SECTIONS, "data": DPODataSection, "dpo": DPOSection}


def dpo_loss(policy_logprobs: torch.Tensor, reference_logprobs: torch.Tensor, beta: float):
    """(loss summed over pairs, pairs, metrics) from ``[2·pairs]`` reply log-probabilities (chosen rows first)."""
    half = policy_logprobs.shape[0] // 2
    chosen = beta * (policy_logprobs[:half] - reference_logprobs[:half])
    rejected = beta * (policy_logprobs[half:] - reference_logprobs[half:])
    logits = chosen - rejected
    margin = logits.detach()
    return -F.logsigmoid(logits).sum(), half, {
        "reward_accuracy": (margin > 0).float().mean(), "reward_margin": margin.mean(),
        "chosen_reward": chosen.detach().mean(), "rejected_reward": rejected.detach().mean()}


class DPOStage(PairStage, LanguageModelStage):
    """DPO from a chat model on preference pairs."""

    name = "dpo"

    def __init__(self, recipe: Recipe) -> None:
        super().__init__(recipe)
        if not recipe.init.checkpoint:
            raise UserError(f"{recipe.source}: init.checkpoint is not set (the SFT model to align)")
        if not recipe.data.train:
            raise UserError(f"{recipe.source}: data.train is empty (preference JSONL files)")
        self.tokenizer = load_tokenizer(recipe.init.checkpoint)
        self.data = PairData(recipe.data.train, ChatTemplate(self.tokenizer, recipe.data.default_system), recipe.data)
        self.reference: QwenModel | None = None

    @property
    def seq_len(self) -> int:
        return self.recipe.data.seq_len

    def build_model(self) -> StageModel:
        policy = load_model(self.recipe.init.checkpoint).train()
        if self.seq_len > policy.config.max_position_embeddings:
            raise UserError(f"{self.recipe.source}: data.seq_len = {self.seq_len} exceeds the model's "
                            f"max_position_embeddings = {policy.config.max_position_embeddings}")
        self.reference = load_model(self.recipe.init.checkpoint).requires_grad_(False)
        return StageModel(policy, policy.config, self.recipe)

    def loss(self, model: QwenModel, batch: dict):
        reference = self.reference.to(batch["input_ids"].device)
        with torch.no_grad():
            reference_logprobs = reply_logprobs(reference, batch)
        return dpo_loss(reply_logprobs(model, batch), reference_logprobs, self.recipe.dpo.beta)

    def write_model(self, directory: Path, state: dict[str, torch.Tensor], config, recipe_text: str) -> None:
        super().write_model(directory, state, config, recipe_text)
        self.write_generation_config(directory)

    def finish(self, final_dir: Path, console: Console) -> None:
        tests = [Path(p) for p in self.recipe.data.test]
        if not tests:
            return
        results = [score_checkpoint(Path(ckpt), tests, self.seq_len, self.recipe.data.default_system)
                   for ckpt in (self.recipe.init.checkpoint, final_dir)]
        render(results, ["before (init)", "after DPO"], console)
        with atomic_file(final_dir.parent / SCORES_FILE) as handle:
            json.dump(results, handle, indent=2)

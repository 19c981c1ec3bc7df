"""Direct preference optimisation (Rafailov et al., 2023): the policy learns from comparisons directly.

``loss = -log σ(β · [(log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r))])`` per pair, with
``log π(y)`` the summed log-probability of a reply's tokens (its closing ``<|im_end|>`` included)
after the ChatML prompt. The policy and the frozen reference both start from ``init.checkpoint``
(an SFT model); the reference's log-probabilities are computed once per micro batch, under
``no_grad``, for the chosen and rejected rows together. The reference is a full copy on every rank
(it is not sharded). Data, batching and the "one pair = one sequence" rule are the reward stage's
(:mod:`qwen_cli.stages.reward`); the output is a chat model directory like SFT's. At the end the
held-out ``data.test`` sets are scored for the starting model and the result (how often each
prefers the chosen reply), side by side, and so is greedy gold exact match on ``data.eval_prompts``.
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
from qwen_cli.data.preference import read_gold_questions
from qwen_cli.errors import UserError
from qwen_cli.evaluation.reward.preference import gold_accuracy, reply_logprobs
from qwen_cli.evaluation.reward.report import render, score_checkpoint
from qwen_cli.fsutil import atomic_file
from qwen_cli.model import QwenModel
from qwen_cli.model.config import ABOVE_ZERO, NON_NEGATIVE, POSITIVE
from qwen_cli.recipe import BASE_SECTIONS, Recipe, ranged
from qwen_cli.stages.lm import LanguageModelStage
from qwen_cli.stages.reward import PairData, PairDataSection, PairStage, check_test_sets
from qwen_cli.tokenizer import load_tokenizer
from qwen_cli.train.stage import StageModel

SCORES_FILE = "scores.json"


@dataclass
class DPODataSection(PairDataSection):
    """Preference JSONL files to train on (plus the reward stage's row and test-set keys)."""

    train: list[str] = field(default_factory=list)
    eval_prompts: str = ""  # held-out {"prompt", "answer"} JSONL: greedy gold exact match before and after
    eval_limit: int = ranged(0, NON_NEGATIVE)  # held-out prompts scored (0: all)
    eval_max_new_tokens: int = ranged(16, POSITIVE)


@dataclass
class DPOSection:
    beta: float = ranged(0.1, ABOVE_ZERO)  # strength of the implicit KL constraint to the reference
    # DPO-Positive (Pal et al., 2024): λ · max(0, log π_ref(y_c) − log π(y_c)) inside the sigmoid, so the
    # chosen reply never loses likelihood; plain DPO lowers it when the replies differ in a token (0: off)
    positive: float = ranged(0.0, NON_NEGATIVE)


SECTIONS: dict[str, type] = {**BASE_SECTIONS, "data": DPODataSection, "dpo": DPOSection}


def dpo_loss(policy_logprobs: torch.Tensor, reference_logprobs: torch.Tensor, beta: float, positive: float = 0.0):
    """(loss summed over pairs, pairs, metrics) from ``[2·pairs]`` reply log-probabilities (chosen rows first);
    ``positive``: DPO-Positive's λ."""
    half = policy_logprobs.shape[0] // 2
    chosen = beta * (policy_logprobs[:half] - reference_logprobs[:half])
    rejected = beta * (policy_logprobs[half:] - reference_logprobs[half:])
    logits = chosen - rejected - beta * positive * (reference_logprobs[:half] - policy_logprobs[:half]).clamp(min=0)
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
        template = ChatTemplate(self.tokenizer, recipe.data.default_system)
        self.data = PairData(recipe.data.train, template, recipe.data)
        check_test_sets(recipe.data.test, template, self.seq_len)
        # read now: a bad file stops the run before training
        self.gold_questions = (read_gold_questions(recipe.data.eval_prompts, recipe.data.eval_limit)
                               if recipe.data.eval_prompts else [])
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
        return dpo_loss(reply_logprobs(model, batch), reference_logprobs, self.recipe.dpo.beta, self.recipe.dpo.positive)

    def write_model(self, directory: Path, state: dict[str, torch.Tensor], config, recipe_text: str) -> None:
        super().write_model(directory, state, config, recipe_text)
        self.write_generation_config(directory)

    def finish(self, final_dir: Path, console: Console) -> None:
        data = self.recipe.data
        tests = [Path(p) for p in data.test]
        if not tests and not data.eval_prompts:
            return
        checkpoints = (Path(self.recipe.init.checkpoint), final_dir)
        results = [score_checkpoint(ckpt, tests, self.seq_len, data.default_system) for ckpt in checkpoints]
        if tests:
            render(results, ["before (init)", "after DPO"], console)
        if data.eval_prompts:
            template = ChatTemplate(self.tokenizer, data.default_system)
            for label, ckpt, result in zip(("before DPO", "after DPO"), checkpoints, results, strict=True):
                result["gold"] = gold_accuracy(load_model(ckpt), template, self.gold_questions,
                                               data.eval_max_new_tokens)
                console.print(f"held-out gold exact match {label}: {100 * result['gold']['gold']:.2f}% "
                              f"of {result['gold']['prompts']} ({data.eval_prompts})")
        with atomic_file(final_dir.parent / SCORES_FILE) as handle:
            json.dump(results, handle, indent=2)

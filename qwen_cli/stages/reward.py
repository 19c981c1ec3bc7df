"""Reward modelling (report §3.2.1): preference-model pretraining (PMP), then RM fine-tuning.

The model is the pretrained decoder of ``init.checkpoint`` with a bias-free ``score`` head
(:class:`~qwen_cli.model.heads.ScalarHeadModel`) read at each reply's closing ``<|im_end|>``; the
loss is ``-log σ(r_chosen − r_rejected)`` per pair. A recipe has two phases, each a section with
its own comparison files, learning rate and length: ``[pmp]`` (large, noisier comparisons) and
``[rm]`` (fewer, cleaner ones), run in that order as two trainer runs (``OUT/pmp``, ``OUT/rm``),
each resumable; ``rm`` starts from ``pmp``'s final model. A phase whose ``train`` list is empty is
skipped. A "sequence" of ``train.batch_tokens`` is one *pair* of up to ``data.seq_len`` tokens per
reply (report: batch 64, sequence 2048 → ``batch_tokens = 131072``). Checkpoints are transformers
``Qwen2ForSequenceClassification`` directories (:mod:`qwen_cli.checkpoint.reward_dir`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from qwen_cli.checkpoint import load_model
from qwen_cli.checkpoint.reward_dir import is_reward_dir, load_reward_model, read_reward_state
from qwen_cli.checkpoint.reward_dir import write_reward_files as write_reward_dir
from qwen_cli.data.chat_template import DEFAULT_SYSTEM, ChatTemplate
from qwen_cli.data.preference import EncodedPair, PairStats, encode_pairs, pair_batch, read_pairs
from qwen_cli.data.shards import ORDER_FORMAT, BatchLayout, EpochPermutation, ResumableBatches
from qwen_cli.errors import UserError
from qwen_cli.evaluation.reward.preference import load_test_pairs, pair_rewards, pairwise_loss, set_name
from qwen_cli.model import Block, ModelConfig
from qwen_cli.model.config import ABOVE_ZERO, NON_NEGATIVE, POSITIVE
from qwen_cli.model.heads import ScalarHeadModel
from qwen_cli.recipe import BASE_SECTIONS, FRACTION, Recipe, ranged
from qwen_cli.tokenizer import load_tokenizer
from qwen_cli.train.stage import Stage, StageModel

PHASES = ("pmp", "rm")


@dataclass
class PairDataSection:
    """How comparisons become token rows, and the held-out sets scored after training (Table 4)."""

    seq_len: int = ranged(2048, POSITIVE)  # tokens per reply row (prompt + reply)
    default_system: str = DEFAULT_SYSTEM
    val_fraction: float = ranged(0.05, FRACTION)  # of each phase's pairs, for the validation loss
    test: list[str] = field(default_factory=list)  # preference JSONL files scored per phase


@dataclass
class PhaseSection:
    """One phase: comparison files (empty: skip), its learning rate and length."""

    train: list[str] = field(default_factory=list)
    lr: float = ranged(0.0, NON_NEGATIVE)  # 0: optim.lr
    epochs: float = ranged(1.0, ABOVE_ZERO)  # report: one epoch
    steps: int = ranged(0, NON_NEGATIVE)  # optimizer steps; 0: ``epochs`` over the training pairs
    # not in the report: blocks appended on top of the starting model, each starting as the identity
    # (QwenModel.append_layers), for a reward model that must compute more than the model it reads
    added_layers: int = ranged(0, NON_NEGATIVE)
    # not in the report: + center_coef · (r_chosen + r_rejected)² per pair (Eisenstein et al. 2023), so a
    # prompt's rewards sit around 0 and a right reply to one prompt outscores a wrong reply to another
    center_coef: float = ranged(0.0, NON_NEGATIVE)


SECTIONS: dict[str, type] = {**BASE_SECTIONS, "data": PairDataSection, "pmp": PhaseSection, "rm": PhaseSection}


class PairBatches(ResumableBatches):
    """Pair ``k`` of a stream of seeded per-epoch permutations, as reward/DPO micro batches."""

    order_format = ORDER_FORMAT

    def __init__(self, pairs: list[EncodedPair], layout: BatchLayout, pad_id: int, seed: int) -> None:
        super().__init__(layout, seed)
        self.pairs, self.pad_id = pairs, pad_id
        self.order = EpochPermutation(len(pairs), [seed])

    def _batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return pair_batch([self.pairs[self.order[k]] for k in indices], self.pad_id)


class PairData:
    """A phase's comparisons, read and encoded once: training pairs and the held-out validation share."""

    def __init__(self, files: list[str], template: ChatTemplate, section: PairDataSection) -> None:
        self.stats = PairStats()
        raw = [pair for path in files for pair in read_pairs(path)]
        pairs = encode_pairs(template, raw, section.seq_len, self.stats)
        n_val = round(len(pairs) * section.val_fraction) if len(pairs) > 1 else 0
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0)).tolist()
        self.val = [pairs[i] for i in order[:n_val]]
        self.train = [pairs[i] for i in order[n_val:]]
        if not self.train:
            raise UserError(f"{files[0]}: no usable comparison pairs")

    def val_batches(self, layout: BatchLayout, max_batches: int, pad_id: int) -> list[dict[str, torch.Tensor]]:
        """This rank's share of at most ``max_batches`` held-out micro batches (counted over all ranks)."""
        b, world = layout.micro_batch_size, layout.world_size
        count = min(max_batches, len(self.val) // b) // world
        return [pair_batch(self.val[(m * world + layout.rank) * b:][:b], pad_id) for m in range(count)]


def pairs_per_step(recipe: Recipe) -> int:
    """Pairs in one optimizer step (a pair counts as one ``data.seq_len`` sequence)."""
    return max(recipe.train.batch_tokens // recipe.data.seq_len, 1)


def phase_recipe(recipe: Recipe, phase: str, train_pairs: int, init: str) -> Recipe:
    """The trainer's recipe for ``phase``: its learning rate, its step count and its starting model."""
    section = getattr(recipe, phase)
    steps = section.steps or max(1, math.ceil(section.epochs * train_pairs / pairs_per_step(recipe)))
    optim = replace(recipe.optim, lr=section.lr or recipe.optim.lr)
    return (recipe.with_section("optim", optim).with_section("train", replace(recipe.train, steps=steps))
            .with_section("init", replace(recipe.init, checkpoint=init)))


class PairStage(Stage):
    """What every stage training on comparison pairs shares: ``self.data`` (a :class:`PairData`) batched as
    pairs, tokens counted without padding."""

    data: PairData

    def count_tokens(self, batch: dict) -> int:
        return int(batch["attention_mask"].sum())

    def train_batches(self, layout: BatchLayout) -> PairBatches:
        return PairBatches(self.data.train, layout, self.tokenizer.eot_id, self.recipe.train.seed)

    def val_batches(self, layout: BatchLayout) -> list:
        return self.data.val_batches(layout, self.recipe.train.val_batches, self.tokenizer.eot_id)


class RewardStage(PairStage):
    """One phase of reward-model training on already-encoded pairs (built by :func:`phase_stage`)."""

    name = "reward"

    def __init__(self, recipe: Recipe, data: PairData, tokenizer, phase: PhaseSection) -> None:
        super().__init__(recipe)
        self.data, self.tokenizer = data, tokenizer
        self.added_layers, self.center_coef = phase.added_layers, phase.center_coef

    @property
    def seq_len(self) -> int:
        return self.recipe.data.seq_len

    def build_model(self) -> StageModel:
        init = Path(self.recipe.init.checkpoint)
        torch.manual_seed(self.recipe.train.seed)  # a new head and appended layers (a resumed run reads them back)
        if is_reward_dir(init):
            model = load_reward_model(init)
        else:  # a fresh head: small random weights, so the backbone gets a gradient from the first step
            model = ScalarHeadModel(load_model(init), bias=False)
            nn.init.normal_(model.score.weight, std=1.0 / math.sqrt(model.config.hidden_size + 1))
        model.backbone.append_layers(self.added_layers)
        if self.seq_len > model.config.max_position_embeddings:
            raise UserError(f"{self.recipe.source}: data.seq_len = {self.seq_len} exceeds the model's "
                            f"max_position_embeddings = {model.config.max_position_embeddings} ({init})")
        return StageModel(model.train(), model.config, self.recipe)

    def blocks(self, model: ScalarHeadModel) -> list[nn.Module]:
        return [module for module in model.modules() if isinstance(module, Block)]

    def flops_per_token(self, model: ScalarHeadModel) -> float:
        return model.backbone.flops_per_token(self.seq_len)

    def loss(self, model: ScalarHeadModel, batch: dict):
        chosen, rejected = pair_rewards(model, batch)
        margin = (chosen - rejected).detach()
        loss = pairwise_loss(chosen, rejected) + self.center_coef * (chosen + rejected) ** 2
        return loss.sum(), chosen.numel(), {
            "accuracy": (margin > 0).float().mean(), "margin": margin.mean()}

    def write_model(self, directory: Path, state: dict[str, torch.Tensor], config: ModelConfig,
                    recipe_text: str) -> None:
        write_reward_dir(directory, state, config, self.tokenizer, recipe_text)

    def read_model_state(self, directory: Path, config: ModelConfig) -> dict[str, torch.Tensor]:
        return read_reward_state(directory, config)



def check_test_sets(files: list[str], template: ChatTemplate, seq_len: int) -> None:
    """Read and encode every ``data.test`` file (their set names must differ) before training, so a bad
    one stops the run at once rather than after it."""
    names: set[str] = set()
    for path in map(Path, files):
        if set_name(path) in names:
            raise UserError(f"{path}: two test sets are named {set_name(path)!r} (rename one file)")
        names.add(set_name(path))
        load_test_pairs(path, template, seq_len)


def train_phases(recipe: Recipe, out: Path, resume: bool, overwrite: bool, console) -> tuple[int, dict[str, Path]]:
    """Run the enabled phases in order into ``out/<phase>``; returns (exit code, final dir per phase)."""
    from qwen_cli.train.trainer import run_stage

    enabled = [phase for phase in PHASES if getattr(recipe, phase).train]
    if not enabled:
        raise UserError(f"{recipe.source}: both [pmp] and [rm] have an empty 'train' list: nothing to train")
    if not recipe.init.checkpoint:
        raise UserError(f"{recipe.source}: init.checkpoint is not set (the pretrained model the reward model starts from)")
    tokenizer = load_tokenizer(recipe.init.checkpoint)
    template = ChatTemplate(tokenizer, recipe.data.default_system)
    init, finals = recipe.init.checkpoint, {}
    phase_data = {phase: PairData(getattr(recipe, phase).train, template, recipe.data) for phase in enabled}
    check_test_sets(recipe.data.test, template, recipe.data.seq_len)  # every input read before any training
    for phase in enabled:
        data = phase_data[phase]
        s = data.stats
        console.print(f"{phase}: {len(data.train):,} training pairs, {len(data.val):,} validation; "
                      f"{s.truncated} truncated to data.seq_len, {s.identical} dropped (chosen == rejected)")
        section = getattr(recipe, phase)
        result = run_stage(lambda r, data=data, section=section: RewardStage(r, data, tokenizer, section),
                           phase_recipe(recipe, phase, len(data.train), init), out / phase,
                           resume=resume, overwrite=overwrite, console=console)
        if result.exit_code:
            return result.exit_code, finals
        finals[phase] = result.final_dir
        init = str(result.final_dir)
    return 0, finals

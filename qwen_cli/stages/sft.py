"""Supervised fine-tuning on ChatML conversations (report §3.1): loss only on assistant replies.

The model and tokenizer come from ``init.checkpoint`` (a pretrained model directory). Data is a
JSONL file of conversations in any shape :mod:`qwen_cli.data.chat_format` reads; every conversation
is rendered, masked and truncated once at start-up, then each epoch is shuffled (seeded) and
laid out as rows of ``data.seq_len`` tokens: ``batching = "pack"`` (several conversations
per row, separated by ``segment_ids``) or ``"pad"`` (one per row, right-padded to the longest
in the micro batch). A "sequence" in ``train.batch_tokens`` is one row.

Recipe sections: the base ones, with ``[data]`` replaced by :class:`ChatDataSection`, plus
``[lora]`` (``rank = 0`` trains all weights) and ``[sample]`` (a reply printed at the end).
``[model]`` may only set ``dropout`` / ``attention_backend`` / ``kernels``: the shape is the checkpoint's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import torch
from rich.console import Console
from rich.markup import escape
from safetensors.torch import load_file, save_file
from torch import nn

from qwen_cli import terminal
from qwen_cli.checkpoint import load_model
from qwen_cli.data.chat_format import read_chat_jsonl
from qwen_cli.data.chat_template import DEFAULT_SYSTEM, ChatStats, ChatTemplate, Sample, encode_conversations
from qwen_cli.data.sft_packing import collate, epoch_rows
from qwen_cli.data.shards import BatchLayout, ResumableBatches, validation_batches
from qwen_cli.errors import UserError
from qwen_cli.model import ModelConfig, QwenModel, lora
from qwen_cli.model.config import ABOVE_ZERO, NON_NEGATIVE, POSITIVE
from qwen_cli.recipe import BASE_SECTIONS, FRACTION, ModelSection, Recipe, ranged
from qwen_cli.stages.lm import LanguageModelStage
from qwen_cli.tokenizer import load_tokenizer
from qwen_cli.train.stage import StageModel

ADAPTER_FILE = "lora_adapter.safetensors"


@dataclass
class ChatDataSection:
    """Conversations (JSONL: messages / ShareGPT / alpaca / ReAct records) and how they become rows."""

    train: str = ""
    val: str = ""  # a separate JSONL file; else ``val_fraction`` of ``train`` is held out
    val_fraction: float = ranged(0.0, FRACTION)
    seq_len: int = ranged(2048, POSITIVE)
    batching: Literal["pack", "pad"] = "pack"
    default_system: str = DEFAULT_SYSTEM
    on_bad: Literal["error", "skip"] = "error"  # a malformed line: stop with file:line, or count and skip


@dataclass
class LoraSection:
    """Low-rank adapters instead of full fine-tuning (``rank = 0``: off); merged into the saved weights."""

    rank: int = ranged(0, NON_NEGATIVE)
    alpha: float = ranged(16.0, ABOVE_ZERO)
    dropout: float = ranged(0.0, FRACTION)
    targets: list[str] = field(default_factory=lambda: list(lora.TARGETS))


@dataclass
class ChatSampleSection:
    """A greedy reply printed after training (``max_new_tokens = 0`` disables it)."""

    prompt: str = "Hello!"
    max_new_tokens: int = ranged(48, NON_NEGATIVE)


SECTIONS: dict[str, type] = {**BASE_SECTIONS, "data": ChatDataSection, "lora": LoraSection,
                             "sample": ChatSampleSection}
TUNABLE_MODEL_KEYS = ("dropout", "attention_backend", "kernels")


def set_dropout(model: QwenModel, p: float) -> None:
    """Change the dropout probability of a built model (config and every Dropout module)."""
    model.config.dropout = p
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p


class ChatBatches(ResumableBatches):
    """Chat rows over shuffled epochs, resumable at step boundaries.

    Global row ``k`` is row ``k mod R`` of epoch ``k // R``'s layout (R rows per epoch, the
    same for every epoch when padding; packing lays out each epoch's shuffle anew).
    """

    def __init__(self, samples: list[Sample], layout: BatchLayout, seq_len: int, mode: str, seed: int) -> None:
        super().__init__(layout, seed)
        self.samples, self.seq_len, self.mode = samples, seq_len, mode
        self._epoch, self._rows, self._epoch_first = -1, [], 0

    def _row(self, k: int) -> list[int]:
        while k >= self._epoch_first + len(self._rows) or self._epoch < 0:
            self._epoch_first += len(self._rows)
            self._epoch += 1
            self._rows = epoch_rows(self.samples, self.seq_len, self.mode, self.seed + self._epoch)
        if k < self._epoch_first:  # a resume went backwards: replay from the start
            self._epoch, self._rows, self._epoch_first = -1, [], 0
            return self._row(k)
        return self._rows[k - self._epoch_first]

    def _batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return micro_batch(self.samples, [self._row(k) for k in indices], self.mode)

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._epoch, self._rows, self._epoch_first = -1, [], 0


@dataclass
class ChatRows:
    """Fixed chat rows read like token windows (``num_windows`` / ``batch``) by ``validation_batches``."""

    samples: list[Sample]
    rows: list[list[int]]
    mode: str

    @property
    def num_windows(self) -> int:
        return len(self.rows)

    def batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return micro_batch(self.samples, [self.rows[i] for i in indices], self.mode)


def micro_batch(samples: list[Sample], rows: list[list[int]], mode: str) -> dict[str, torch.Tensor]:
    """Collated rows, as wide as the longest row (``segment_ids`` only when packing)."""
    width = max(sum(len(samples[i].ids) for i in row) for row in rows)
    return collate(samples, rows, width, segments=mode == "pack")


class SFTStage(LanguageModelStage):
    """Chat fine-tuning from a pretrained checkpoint."""

    name = "sft"

    def __init__(self, recipe: Recipe) -> None:
        super().__init__(recipe)
        data, source = recipe.data, recipe.source
        if not recipe.init.checkpoint:
            raise UserError(f"{source}: init.checkpoint is not set (the pretrained model directory to fine-tune)")
        if not data.train:
            raise UserError(f"{source}: data.train is not set (a JSONL file of conversations)")
        shaped = [f.name for f in fields(ModelSection)
                  if f.name not in TUNABLE_MODEL_KEYS and getattr(recipe.model, f.name) is not None]
        if shaped:
            raise UserError(f"{source}: model.{shaped[0]} cannot be set for SFT (the shape comes from "
                            f"init.checkpoint; only {', '.join(TUNABLE_MODEL_KEYS)} may be)")
        self.tokenizer = load_tokenizer(recipe.init.checkpoint)
        self.template = ChatTemplate(self.tokenizer, data.default_system)
        self.stats = ChatStats()
        conversations, self.stats.skipped_lines = read_chat_jsonl(data.train, data.on_bad)
        val_conversations: list = []
        if data.val:
            val_conversations, skipped = read_chat_jsonl(data.val, data.on_bad)
            self.stats.skipped_lines += skipped
        elif data.val_fraction:
            n_val = max(1, round(len(conversations) * data.val_fraction))
            conversations, val_conversations = conversations[:-n_val], conversations[-n_val:]
        self.train_samples = encode_conversations(self.template, conversations, data.seq_len, self.stats)
        self.val_samples = encode_conversations(self.template, val_conversations, data.seq_len, ChatStats())
        if not self.train_samples:
            raise UserError(f"{data.train}: no conversation has a supervised token within data.seq_len = {data.seq_len}")

    @property
    def seq_len(self) -> int:
        return self.recipe.data.seq_len

    def build_model(self) -> StageModel:
        model = load_model(self.recipe.init.checkpoint).train()
        if self.seq_len > model.config.max_position_embeddings:
            raise UserError(f"{self.recipe.source}: data.seq_len = {self.seq_len} exceeds the model's "
                            f"max_position_embeddings = {model.config.max_position_embeddings} "
                            f"({self.recipe.init.checkpoint})")
        if self.tokenizer.vocab_size > model.config.vocab_size:
            raise UserError(f"{self.recipe.init.checkpoint}: tokenizer has {self.tokenizer.vocab_size} tokens, "
                            f"the model only {model.config.vocab_size} embedding rows")
        if self.recipe.model.dropout is not None:
            set_dropout(model, self.recipe.model.dropout)
        if self.recipe.model.attention_backend is not None:
            model.config.attention_backend = self.recipe.model.attention_backend
        if self.recipe.model.kernels is not None:
            model.config.kernels = self.recipe.model.kernels
        cfg = self.recipe.lora
        if cfg.rank:
            try:
                lora.apply_lora(model, cfg.rank, cfg.alpha, cfg.dropout, cfg.targets)
            except ValueError as exc:
                raise UserError(f"{self.recipe.source}: [lora] {exc}") from None
        return StageModel(model, model.config, self.recipe)

    def train_batches(self, layout: BatchLayout) -> ChatBatches:
        if layout.rank == 0:
            s = self.stats
            terminal.console(stderr=True).print(
                f"sft data: {s.conversations} conversations, {s.tokens:,} tokens ({s.supervised_tokens:,} "
                f"supervised); truncated: {s.truncated_turns} by oldest turns, {s.truncated_tail} at the tail; "
                f"dropped {s.dropped}; bad lines skipped {s.skipped_lines}; {len(self.val_samples)} validation")
        d = self.recipe.data
        return ChatBatches(self.train_samples, layout, d.seq_len, d.batching, self.recipe.train.seed)

    def val_batches(self, layout: BatchLayout) -> list:
        """This rank's share of the first ``train.val_batches`` held-out micro batches (all ranks together,
        as for pretraining: :func:`~qwen_cli.data.shards.validation_batches`)."""
        if not self.val_samples:
            return []
        d = self.recipe.data
        rows = ChatRows(self.val_samples, epoch_rows(self.val_samples, d.seq_len, d.batching, seed=0), d.batching)
        return validation_batches(rows, layout, self.recipe.train.val_batches)

    def write_model(self, directory: Path, state: dict[str, torch.Tensor], config: ModelConfig,
                    recipe_text: str) -> None:
        """Plain Qwen2 weights (LoRA merged), ``generation_config.json`` with the chat stop ids and, with
        LoRA, the adapters for exact resume."""
        if self.recipe.lora.rank:
            save_file(lora.adapter_state(state), directory / ADAPTER_FILE)
            state = lora.merge_state(state, self.recipe.lora.alpha / self.recipe.lora.rank)
        super().write_model(directory, state, config, recipe_text)
        self.write_generation_config(directory)

    def read_model_state(self, directory: Path, config: ModelConfig) -> dict[str, torch.Tensor]:
        """With LoRA: the frozen base weights of ``init.checkpoint`` plus the saved adapters."""
        if not self.recipe.lora.rank:
            return super().read_model_state(directory, config)
        base = super().read_model_state(Path(self.recipe.init.checkpoint), config)
        return lora.unmerged_state(base, load_file(directory / ADAPTER_FILE))

    def finish(self, final_dir: Path, console: Console) -> None:
        sample = self.recipe.sample
        if sample.max_new_tokens <= 0:
            return
        from qwen_cli.inference.generate import generate

        model = load_model(final_dir)
        prompt = self.template.prompt([{"role": "user", "content": sample.prompt}])
        reply = generate(model, [prompt], sample.max_new_tokens, stop_ids=self.template.stop_ids)[0]
        console.print(f"[bold]sample[/] user: {escape(sample.prompt)}")
        console.print(f"[bold]sample[/] assistant: {escape(self.tokenizer.decode(reply))}", highlight=False)

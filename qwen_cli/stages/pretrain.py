"""Pretraining: next-token prediction on packed token shards (report §2.1–2.4).

Batches come from ``qwen_cli.data.shards`` (shuffled windows of ``data.seq_len + 1`` ids);
the loss is the summed token cross-entropy through the fused output projection
(``kernels.cross_entropy``), never materialising the full logits. The model is fresh (seeded
by the trainer) or ``init.checkpoint``; an unset ``model.vocab_size`` is the shard tokenizer's
padded vocabulary size. After the final save, a short greedy sample from ``[sample] prompt``
is printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape

from kernels.cross_entropy import linear_cross_entropy
from qwen_cli.checkpoint import load_model
from qwen_cli.data.encode import TOKENIZER_DIR, read_manifest
from qwen_cli.data.shards import BatchLayout, ShuffledBatches, TokenWindows, validation_batches
from qwen_cli.errors import UserError
from qwen_cli.model import QwenModel
from qwen_cli.recipe import BASE_SECTIONS, Recipe
from qwen_cli.tokenizer import load_tokenizer
from qwen_cli.trainer import Stage


@dataclass
class SampleSection:
    """A generated sample printed at the end of the run (``max_new_tokens = 0`` disables it)."""

    prompt: str = "def "
    max_new_tokens: int = 48
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0


SECTIONS: dict[str, type] = {**BASE_SECTIONS, "sample": SampleSection}


def causal_lm_loss(model: QwenModel, batch: dict, chunk: int = 0):
    """(summed cross-entropy over labels != -100, counted tokens, {}) — shared with SFT."""
    hidden = model.hidden_states(batch["input_ids"], segment_ids=batch.get("segment_ids"))
    loss, n = linear_cross_entropy(hidden, model.lm_head.weight, batch["labels"], chunk=chunk)
    return loss, n, {}


class PretrainStage(Stage):
    """Language-model pretraining on a shard directory from ``qwen tokenize encode``."""

    name = "pretrain"

    def __init__(self, recipe: Recipe) -> None:
        super().__init__(recipe)
        shards = recipe.data.shards
        if not shards:
            raise UserError(f"{recipe.source}: data.shards is not set (a directory from 'qwen tokenize encode')")
        self.shards = Path(shards)
        if not self.shards.is_dir():
            raise UserError(f"{recipe.source}: data.shards = '{shards}' is not a directory")
        self.manifest = read_manifest(self.shards)
        self.tokenizer = load_tokenizer(self.shards / self.manifest["tokenizer"].get("dir", TOKENIZER_DIR))
        self.train_windows = TokenWindows(self.shards, "train", recipe.data.seq_len)
        self.val_windows = TokenWindows(self.shards, "val", recipe.data.seq_len)

    @property
    def seq_len(self) -> int:
        return self.recipe.data.seq_len

    def build_model(self) -> QwenModel:
        init = self.recipe.init.checkpoint
        if init:
            model = load_model(init).train()
            self.model_config = model.config
        else:
            self.model_config = self.recipe.model.to_config(vocab_size=self.tokenizer.padded_vocab_size)
            model = QwenModel(self.model_config)
        if self.model_config.vocab_size < self.tokenizer.vocab_size:
            raise UserError(f"{self.recipe.source}: model.vocab_size = {self.model_config.vocab_size} is smaller than "
                            f"the tokenizer's {self.tokenizer.vocab_size} tokens")
        if self.seq_len > self.model_config.max_position_embeddings:
            raise UserError(f"{self.recipe.source}: data.seq_len = {self.seq_len} exceeds "
                            f"model.max_position_embeddings = {self.model_config.max_position_embeddings}")
        self.recipe.model.vocab_size = self.model_config.vocab_size  # the saved recipe is fully resolved
        return model

    def train_batches(self, layout: BatchLayout) -> ShuffledBatches:
        return ShuffledBatches(self.train_windows, layout, self.recipe.train.seed)

    def val_batches(self, layout: BatchLayout) -> list:
        return validation_batches(self.val_windows, layout, self.recipe.train.val_batches)

    def loss(self, model: QwenModel, batch: dict):
        return causal_lm_loss(model, batch, self.recipe.train.loss_chunk_tokens)

    def finish(self, final_dir: Path, console: Console) -> None:
        sample = self.recipe.sample
        if sample.max_new_tokens <= 0:
            return
        from qwen_cli.generate import generate

        model = load_model(final_dir)
        prompt = self.tokenizer.encode(sample.prompt)
        with torch.no_grad():
            out = generate(model, [prompt], sample.max_new_tokens, temperature=sample.temperature, top_p=sample.top_p,
                           stop_ids=(self.tokenizer.eot_id,), seed=self.recipe.train.seed)[0]
        console.print(f"[bold]sample[/] ({sample.max_new_tokens} tokens from {sample.prompt!r}):")
        console.print(escape(sample.prompt + self.tokenizer.decode(out)), highlight=False)

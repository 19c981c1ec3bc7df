"""Pretraining: next-token prediction on packed token shards (report §2.1–2.4).

Batches come from ``qwen_cli.data.shards`` (shuffled windows of ``data.seq_len + 1`` ids);
the loss is the summed token cross-entropy through the fused output projection
(``qwen_cli.kernels.cross_entropy``), never materialising the full logits. The model is fresh (seeded
by the trainer) or ``init.checkpoint``; an unset ``model.vocab_size`` is the shard tokenizer's
padded vocabulary size. After the final save, a short greedy sample from ``[sample] prompt``
is printed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape

from qwen_cli.checkpoint import load_model
from qwen_cli.data.encode import TOKENIZER_DIR, read_manifest
from qwen_cli.data.shards import BatchLayout, ShuffledBatches, TokenWindows, validation_batches
from qwen_cli.errors import UserError
from qwen_cli.model import QwenModel
from qwen_cli.recipe import BASE_SECTIONS, Recipe
from qwen_cli.stages.lm import LanguageModelStage
from qwen_cli.tokenizer import load_tokenizer
from qwen_cli.train.stage import StageModel


@dataclass
class SampleSection:
    """A generated sample printed at the end of the run (``max_new_tokens = 0`` disables it)."""

    prompt: str = "def "
    max_new_tokens: int = 48
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0


SECTIONS: dict[str, type] = {**BASE_SECTIONS, "sample": SampleSection}


class PretrainStage(LanguageModelStage):
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

    def build_model(self) -> StageModel:
        init = self.recipe.init.checkpoint
        if init:
            model = load_model(init).train()
            config = model.config
        else:
            config = self.recipe.model.to_config(vocab_size=self.tokenizer.padded_vocab_size)
            model = QwenModel(config)
        if config.vocab_size < self.tokenizer.vocab_size:
            raise UserError(f"{self.recipe.source}: model.vocab_size = {config.vocab_size} is smaller than "
                            f"the tokenizer's {self.tokenizer.vocab_size} tokens")
        if self.seq_len > config.max_position_embeddings:
            raise UserError(f"{self.recipe.source}: data.seq_len = {self.seq_len} exceeds "
                            f"model.max_position_embeddings = {config.max_position_embeddings}")
        resolved = self.recipe.with_section("model", replace(self.recipe.model, vocab_size=config.vocab_size))
        return StageModel(model, config, resolved)

    def train_batches(self, layout: BatchLayout) -> ShuffledBatches:
        return ShuffledBatches(self.train_windows, layout, self.recipe.train.seed)

    def val_batches(self, layout: BatchLayout) -> list:
        return validation_batches(self.val_windows, layout, self.recipe.train.val_batches)

    def finish(self, final_dir: Path, console: Console) -> None:
        sample = self.recipe.sample
        if sample.max_new_tokens <= 0:
            return
        from qwen_cli.inference.generate import generate

        model = load_model(final_dir)
        prompt = self.tokenizer.encode(sample.prompt)
        with torch.no_grad():
            out = generate(model, [prompt], sample.max_new_tokens, temperature=sample.temperature, top_p=sample.top_p,
                           stop_ids=(self.tokenizer.eot_id,), seed=self.recipe.train.seed)[0]
        console.print(f"[bold]sample[/] ({sample.max_new_tokens} tokens from {sample.prompt!r}):")
        console.print(escape(sample.prompt + self.tokenizer.decode(out)), highlight=False)

"""Pretraining: next-token prediction on packed token shards (report §2.1–2.4).

Batches come from ``qwen_cli.data.shards`` (shuffled windows of ``data.seq_len + 1`` ids) of one
shard directory (``data.shards``) or of a weighted mixture (``data.sources``, e.g. code + text
for continued pretraining; every source must share one tokenizer);
the loss is the summed token cross-entropy through the fused output projection
(``qwen_cli.kernels.cross_entropy``), never materialising the full logits. The model is fresh (seeded
by the trainer) or ``init.checkpoint``; an unset ``model.vocab_size`` is the shard tokenizer's
padded vocabulary size. After the final save, a short greedy sample from ``[sample] prompt``
is printed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape

from qwen_cli.checkpoint import load_model
from qwen_cli.data.encode import TOKENIZER_DIR, read_manifest
from qwen_cli.data.shards import BatchLayout, MixedBatches, ShuffledBatches, TokenWindows, validation_batches
from qwen_cli.errors import UserError
from qwen_cli.model import QwenModel
from qwen_cli.model.config import NON_NEGATIVE, Range
from qwen_cli.recipe import BASE_SECTIONS, Recipe, ranged
from qwen_cli.stages.lm import LanguageModelStage
from qwen_cli.tokenizer import load_tokenizer
from qwen_cli.train.stage import StageModel


@dataclass
class SampleSection:
    """A generated sample printed at the end of the run (``max_new_tokens = 0`` disables it)."""

    prompt: str = "def "
    max_new_tokens: int = ranged(48, NON_NEGATIVE)
    temperature: float = ranged(0.0, NON_NEGATIVE)  # 0 = greedy
    top_p: float = ranged(1.0, Range(0, 1, low_open=True))


SECTIONS: dict[str, type] = {**BASE_SECTIONS, "sample": SampleSection}


def data_sources(recipe: Recipe) -> list[tuple[Path, float]]:
    """(shard directory, weight) of ``data.shards`` or of each ``data.sources`` entry, checked."""
    data, where = recipe.data, recipe.source
    if data.shards and data.sources:
        raise UserError(f"{where}: set data.shards or data.sources, not both")
    if not data.shards and not data.sources:
        raise UserError(f"{where}: data.shards is not set (a directory from 'qwen tokenize encode')")
    entries = [("data.shards", data.shards, 1.0)] if data.shards else [
        (f"data.sources[{i}].shards", source.shards, source.weight) for i, source in enumerate(data.sources)]
    for key, shards, weight in entries:
        if not shards:
            raise UserError(f"{where}: {key} is not set")
        if not Path(shards).is_dir():
            raise UserError(f"{where}: {key} = '{shards}' is not a directory")
        if not (weight > 0 and math.isfinite(weight)):
            raise UserError(f"{where}: {key.removesuffix('.shards')}.weight must be a positive number, got {weight}")
    return [(Path(shards), weight) for _, shards, weight in entries]


class PretrainStage(LanguageModelStage):
    """Language-model pretraining on a shard directory from ``qwen tokenize encode``."""

    name = "pretrain"

    def __init__(self, recipe: Recipe) -> None:
        super().__init__(recipe)
        self.sources = data_sources(recipe)
        seq_len = recipe.data.seq_len
        manifests = [read_manifest(directory) for directory, _ in self.sources]
        hashes = {m["tokenizer"].get("hash") for m in manifests}
        if len(hashes) > 1:
            raise UserError(f"{recipe.source}: data.sources were encoded with different tokenizers "
                            f"({', '.join(str(d) for d, _ in self.sources)}); a mixture needs one vocabulary")
        first = self.sources[0][0]
        self.tokenizer = load_tokenizer(first / manifests[0]["tokenizer"].get("dir", TOKENIZER_DIR))
        self.train_windows = [TokenWindows(directory, "train", seq_len) for directory, _ in self.sources]
        self.val_windows = [TokenWindows(directory, "val", seq_len) for directory, _ in self.sources]

    @property
    def seq_len(self) -> int:
        return self.recipe.data.seq_len

    def build_model(self) -> StageModel:
        init = self.recipe.init.checkpoint
        if init:
            init_hash = load_tokenizer(init).hash
            if init_hash != self.tokenizer.hash:
                raise UserError(f"{self.recipe.source}: data shards were encoded with another tokenizer than "
                                f"init.checkpoint {init} ({self.tokenizer.hash[:12]} vs {init_hash[:12]}); "
                                f"re-encode them with --tokenizer {init}")
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

    def train_batches(self, layout: BatchLayout) -> ShuffledBatches | MixedBatches:
        seed = self.recipe.train.seed
        if not self.recipe.data.sources:
            return ShuffledBatches(self.train_windows[0], layout, seed)
        names = [f"data.sources[{i}] ({directory})" for i, (directory, _) in enumerate(self.sources)]
        return MixedBatches(self.train_windows, [w for _, w in self.sources], layout, seed, names)

    def val_batches(self, layout: BatchLayout) -> list:
        """The first ``train.val_batches`` held-out micro batches of every source."""
        return [batch for windows in self.val_windows
                for batch in validation_batches(windows, layout, self.recipe.train.val_batches)]

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

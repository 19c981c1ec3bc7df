"""The base of every stage that trains a Qwen decoder as a language model (pretrain, SFT, specialise).

It answers the trainer's model questions for :class:`~qwen_cli.model.QwenModel`: the transformer
blocks are the sharding and compile unit, FLOPs per token follow PaLM's formula, every input
position counts as a token, the loss is next-token cross-entropy, and checkpoints are Hugging
Face Qwen2 model directories carrying ``self.tokenizer``. Subclasses supply the data (and
``build_model``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from qwen_cli.checkpoint.export import ModelDirTensors, write_model_state
from qwen_cli.interop.qwen2 import write_generation_config
from qwen_cli.model import Block, ModelConfig, QwenModel
from qwen_cli.stages.losses import causal_lm_loss
from qwen_cli.train.stage import Stage


class LanguageModelStage(Stage):
    """A stage training a ``QwenModel`` with next-token prediction; ``self.tokenizer`` goes into checkpoints."""

    tokenizer = None

    def blocks(self, model: QwenModel) -> list[nn.Module]:
        return [module for module in model.modules() if isinstance(module, Block)]

    def flops_per_token(self, model: QwenModel) -> float:
        return model.flops_per_token(self.seq_len)

    def count_tokens(self, batch: dict) -> int:
        return batch["input_ids"].numel()

    def loss(self, model: QwenModel, batch: dict):
        return causal_lm_loss(model, batch, self.recipe.train.loss_chunk_tokens)

    def write_model(self, directory: Path, state: dict[str, torch.Tensor], config: ModelConfig,
                    recipe_text: str) -> None:
        """A Qwen2-layout model directory from a full state dict, written tensor by tensor (``state`` may be
        lazy: a multi-process run exports its final model from the DCP shards so)."""
        write_model_state(directory, state, config, self.tokenizer, recipe_text)

    def read_model_state(self, directory: Path, config: ModelConfig) -> Mapping[str, torch.Tensor]:
        """Lazy: each tensor is read when looked up (a resume copies them into the model one at a time)."""
        return ModelDirTensors(directory, config)

    def write_generation_config(self, directory: Path) -> None:
        """``generation_config.json`` with the chat stop ids, so transformers' ``generate`` stops at ``<|im_end|>``."""
        write_generation_config(directory, self.tokenizer.special_ids)

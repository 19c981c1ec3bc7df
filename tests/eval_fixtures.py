"""A tiny random checkpoint under the official Qwen vocabulary, for the tests of ``qwen eval``."""

from __future__ import annotations

from pathlib import Path

import torch

from qwen_cli.checkpoint import save_model
from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.tokenizer import load_tokenizer


def tiny_qwen_checkpoint(directory: Path, max_positions: int = 256):
    """``(model, tokenizer, checkpoint directory)``: 2 layers of width 32, seeded, saved under ``directory``."""
    torch.manual_seed(0)
    tokenizer = load_tokenizer("qwen")
    model = QwenModel(ModelConfig(vocab_size=tokenizer.padded_vocab_size, hidden_size=32, num_layers=2,
                                  num_heads=2, intermediate_size=64, max_position_embeddings=max_positions)).eval()
    return model, tokenizer, save_model(directory / "tiny", model, tokenizer)

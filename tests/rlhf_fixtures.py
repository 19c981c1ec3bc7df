"""Tiny models and preference data for the rlhf tests (byte tokenizer, random weights, seconds on one core)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from qwen_cli.checkpoint import save_model
from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.tokenizer import Tokenizer

WORDS = ("apple", "river", "stone", "cloud", "lamp", "tiger", "bread", "glass", "music", "paper", "snow", "wheel")


def byte_tokenizer() -> Tokenizer:
    return Tokenizer({bytes([i]): i for i in range(256)}, name="bytes")


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random 2-layer decoder with the byte tokenizer, saved as a model directory."""
    tok = byte_tokenizer()
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=tok.padded_vocab_size, hidden_size=32, num_layers=2, num_heads=2,
                         intermediate_size=64, max_position_embeddings=128)
    return save_model(path, QwenModel(config), tok)


def separable_pairs(path: Path, n: int, seed: int) -> Path:
    """Pairs any reward model can separate: the chosen reply is always "yes <word>", the rejected "no <word>"."""
    rng = random.Random(seed)
    with path.open("w") as handle:
        for _ in range(n):
            word = rng.choice(WORDS)
            handle.write(json.dumps({"prompt": f"Tell me about {word} {rng.randint(0, 999)}.",
                                     "chosen": f"yes {word}", "rejected": f"no {word}"}) + "\n")
    return path


def prompt_file(path: Path, n: int, seed: int) -> Path:
    """PPO prompts with a gold answer (the prompt's word)."""
    rng = random.Random(seed)
    with path.open("w") as handle:
        for i in range(n):
            word = rng.choice(WORDS)
            handle.write(json.dumps({"prompt": f"Say {word} ({i}).", "answer": str(i)}) + "\n")
    return path


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path

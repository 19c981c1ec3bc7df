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


def tiny_reward_model(path: Path, base: Path, seed: int = 1) -> Path:
    """A reward-model directory: ``base``'s decoder with a random score head."""
    from qwen_cli.checkpoint import load_model
    from qwen_cli.checkpoint.files import write_checksums
    from qwen_cli.checkpoint.reward_dir import write_reward_files
    from qwen_cli.model.heads import ScalarHeadModel

    torch.manual_seed(seed)
    model = ScalarHeadModel(load_model(base), bias=False)
    torch.nn.init.normal_(model.score.weight, std=0.5)
    path.mkdir(parents=True)
    write_reward_files(path, model.state_dict(), model.config, byte_tokenizer())
    write_checksums(path)
    return path


PPO_RECIPE = """
[models]
policy = "{policy}"
reward = "{reward}"
[ppo]
prompts = ["{prompts}"]
eval_prompts = "{prompts}"
eval_limit = 4
prompts_per_step = 4
samples_per_prompt = 2
value_only_steps = {value_only}
max_new_tokens = 8
mini_batch_size = 4
epochs = 2
policy_lr = 1e-3
value_lr = 1e-3
pretrain_coef = {ptx}
pretrain_sequences = 2
[data]
shards = "{shards}"
seq_len = 32
[schedule]
warmup_steps = 0
decay = "constant"
[train]
steps = {steps}
micro_batch_size = 4
dtype = "float32"
device = "cpu"
seed = 7
[checkpoint]
every = 2
keep_last = 5
[logging]
progress = "none"
"""

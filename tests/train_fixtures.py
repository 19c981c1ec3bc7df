"""Helpers for the trainer tests: a byte-level tokenizer, shards of real text, tiny recipes.

The corpus is a handful of Python standard-library modules read from the running
interpreter's installation (local, deterministic for a given Python build).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from qwen_cli.data.encode import encode_corpus
from qwen_cli.recipe import Recipe, load_recipe
from qwen_cli.stages.pretrain import SECTIONS
from qwen_cli.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
TINY_RECIPE = ROOT / "recipes" / "tiny" / "pretrain.toml"
STDLIB_FILES = ("textwrap.py", "glob.py", "fnmatch.py", "shlex.py", "bisect.py", "heapq.py", "keyword.py")

# A model small enough for a step to take milliseconds on one core.
TINY_OVERRIDES = (
    "model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=64",
    "model.max_position_embeddings=64", "data.seq_len=32", "train.batch_tokens=256",
    "train.micro_batch_size=4", "train.steps=8", "train.val_batches=2", "train.val_every=4",
    "train.peak_flops=1e9", "schedule.warmup_steps=2", "checkpoint.every=2", "checkpoint.keep_last=10",
    "logging.progress=none", "sample.max_new_tokens=0", "optim.lr=3e-3",
)


def make_shards(root: Path) -> Path:
    """Shards (train + val) of a few stdlib modules under a 256-byte tokenizer (vocab 512 padded)."""
    corpus = root / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    stdlib = Path(os.__file__).parent
    for name in STDLIB_FILES:
        shutil.copy(stdlib / name, corpus / name)
    Tokenizer({bytes([i]): i for i in range(256)}, name="bytes").save(root / "tokenizer", hf=False)
    out = root / "shards"
    encode_corpus([str(corpus)], str(root / "tokenizer"), out, val_fraction=0.3, workers=1, seed=0)
    return out


def tiny_recipe(shards: Path, *extra: str) -> Recipe:
    return load_recipe(TINY_RECIPE, (*TINY_OVERRIDES, f"data.shards={shards}", *extra), sections=SECTIONS)


def final_weights(run_dir: Path) -> bytes:
    return (run_dir / "final" / "model.safetensors").read_bytes()


def run_cli_until_killed(args: list[str], step: int, timeout: float = 300) -> None:
    """Run ``qwen *args`` until it SIGKILLs itself right after ``metrics.jsonl`` logs ``step``
    (``sigkill_at_step.py``); fails if the run ends any other way."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "sigkill_at_step.py"), str(step), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def free_port() -> int:
    """A TCP port nothing listens on now, for a torchrun rendezvous (a fixed port fails when two runs share a host)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bigram_model(config, pairs):
    """A QwenModel rigged as a bigram machine: attention and MLP outputs zeroed, so after token ``src``
    the greedy next token is ``dst`` for each (src, dst) in ``pairs`` (the i-th pair uses hidden unit i)."""
    import torch

    from qwen_cli.model import QwenModel

    torch.manual_seed(0)
    model = QwenModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")) or name.startswith(("embed_tokens", "lm_head")):
                p.zero_()
        for i, (src, dst) in enumerate(pairs):
            model.embed_tokens.weight[src, i] = 1.0
            model.lm_head.weight[dst, i] += 10.0
    return model

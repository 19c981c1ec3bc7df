"""``qwen rlhf score``: pairwise accuracy of checkpoints on preference test sets, side by side (report Table 4).

A reward model (``Qwen2ForSequenceClassification`` directory) is scored by its rewards at the end
token; a language model (an SFT or DPO model) by the log-probability it gives each reply, so the
same table shows a DPO model before and after training.
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from qwen_cli.checkpoint import load_model
from qwen_cli.checkpoint.reward_dir import is_reward_dir, load_reward_model
from qwen_cli.data.chat_template import DEFAULT_SYSTEM, ChatTemplate
from qwen_cli.data.preference import read_pairs
from qwen_cli.errors import UserError
from qwen_cli.evaluation.reward.preference import (
    likelihood_accuracy,
    load_test_pairs,
    reward_accuracy,
    set_name,
)
from qwen_cli.terminal import print_table
from qwen_cli.tokenizer import load_tokenizer


def set_names(files: list[Path]) -> list[str]:
    """The display name of each test set; two sets may not share one."""
    names: list[str] = []
    for path in files:
        name = set_name(path)
        if name in names:
            raise UserError(f"{path}: two test sets are named {name!r} (rename one file)")
        names.append(name)
    return names


def check_inputs(checkpoints: list[Path], files: list[Path]) -> None:
    """What ``qwen rlhf score`` would fail on, found before any model loads: a checkpoint that is not a
    directory, a test set that is not readable preference pairs, two test sets with one name."""
    for checkpoint in checkpoints:
        if not checkpoint.is_dir():
            raise UserError(f"{checkpoint}: not a model directory (a test set belongs after --pairs)")
    for path in files:
        read_pairs(path)
    set_names(files)


def score_checkpoint(checkpoint: Path, files: list[Path], seq_len: int = 2048,
                     default_system: str = DEFAULT_SYSTEM) -> dict:
    """``{"checkpoint", "kind", "sets": {name: {"accuracy", "margin", "pairs"}}}`` for one checkpoint."""
    reward = is_reward_dir(checkpoint)
    model = load_reward_model(checkpoint) if reward else load_model(checkpoint)
    tokenizer = load_tokenizer(str(checkpoint))
    template = ChatTemplate(tokenizer, default_system)
    seq_len = min(seq_len, model.config.max_position_embeddings)
    sets = {}
    with torch.inference_mode():
        for name, path in zip(set_names(files), files, strict=True):
            pairs = load_test_pairs(path, template, seq_len)
            score = reward_accuracy if reward else likelihood_accuracy
            sets[name] = score(model, pairs, tokenizer.eot_id)
    return {"checkpoint": str(checkpoint), "kind": "reward" if reward else "likelihood", "sets": sets}


def render(results: list[dict], labels: list[str], console: Console) -> None:
    """One row per checkpoint, one column per test set: accuracy % (mean margin)."""
    names = list(dict.fromkeys(name for result in results for name in result["sets"]))
    table = Table(title="pairwise test accuracy % (mean margin chosen − rejected)")
    table.add_column("model")
    for name in names:
        table.add_column(name, justify="right")
    for label, result in zip(labels, results, strict=True):
        cells = []
        for name in names:
            s = result["sets"].get(name)
            cells.append(f"{100 * s['accuracy']:.2f} ({s['margin']:+.3f})" if s else "-")
        table.add_row(label, *cells)
    print_table(console, table)

"""`qwen extend-context`: the report's training-free context extension (§2.5) and its Table 3 sweep.

Methods (rows of the sweep; T = the length the model was trained at):

    plain                      RoPE as trained, full attention
    ntk                        Qwen's dynamic NTK-aware RoPE (bucketed alpha)
    ntk+logn                   + LogN query scaling past T
    ntk+logn+window[SPEC]      + layer-wise window attention, one row per window schedule
    ntk-continuous+logn        not in the report: transformers' un-bucketed "dynamic" base (factor 1)

A window schedule SPEC is ``W@K`` (window W for the lowest K layers, full attention above) or a
comma list with one window per layer (0 = full); W may be a token count or a multiple of T
(``T``, ``2T``, ``0.5T``). Perplexity at length L is measured on chunks of exactly L tokens cut
from documents at least L long, with the same number of tokens per length where the corpus
allows (``tokens_per_length``).

Every length, window and T is a whole number of tokens up to :data:`MAX_CONTEXT` (checked by
:func:`check_context` before any model is loaded or written), and option lists may not be empty.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from qwen_cli.corpus import ReadStats, iter_documents
from qwen_cli.errors import UserError
from qwen_cli.kernels.cross_entropy import linear_cross_entropy
from qwen_cli.model import ModelConfig, QwenModel

REPORT_METHODS = ("plain", "ntk", "ntk+logn", "ntk+logn+window")
EXTRA_METHODS = ("ntk-continuous+logn",)
METHODS = REPORT_METHODS + EXTRA_METHODS
_WINDOW = re.compile(r"^(\d+(?:\.\d+)?)?(T)?$")
MAX_CONTEXT = 1 << 20  # tokens: the longest length, window or T any option may name


def check_context(option: str, tokens: int, text: str | None = None) -> int:
    """``tokens`` if it is within 0..MAX_CONTEXT, else a UserError naming ``option`` and the value as
    given (``text``, default: ``tokens``)."""
    if not 0 <= tokens <= MAX_CONTEXT:
        raise UserError(f"{option} {tokens if text is None else text}: {tokens:,} tokens is outside "
                        f"0 to {MAX_CONTEXT:,}")
    return tokens


def option_list(option: str, text: str, sep: str = ",") -> list[str]:
    """The ``sep``-separated items of ``text``; an option given with no item is a UserError."""
    items = [item.strip() for item in text.split(sep) if item.strip()]
    if not items:
        raise UserError(f"{option} {text!r}: empty; give at least one item or leave the option out")
    return items


def window_size(token: str, trained: int) -> int:
    """``512``, ``T``, ``2T`` or ``0.5T`` -> a window in tokens (0 = full attention)."""
    match = _WINDOW.match(token.strip())
    if not match or not any(match.groups()):
        raise UserError(f"--window {token!r}: expected a token count or a multiple of T such as 2T")
    number = float(match.group(1) or 1)
    size = number * trained if match.group(2) else number
    if size != int(size) or size < 0:
        raise UserError(f"--window {token!r}: not a whole number of tokens ({size})")
    return check_context("--window", int(size), repr(token))


def parse_window_spec(spec: str, num_layers: int, trained: int) -> list[int]:
    """Per-layer windows from ``W@K`` or ``W0,W1,…`` (see the module docstring); ``none`` = []."""
    spec = spec.strip()
    if spec in ("", "none", "full"):
        return []
    if "@" in spec:
        size, _, count = spec.partition("@")
        if not count.isdigit() or not 0 < int(count) <= num_layers:
            raise UserError(f"--window {spec!r}: K in W@K must be a layer count from 1 to {num_layers}")
        return [window_size(size, trained)] * int(count) + [0] * (num_layers - int(count))
    windows = [window_size(part, trained) for part in spec.split(",")]
    if len(windows) != num_layers:
        raise UserError(f"--window {spec!r}: {len(windows)} windows for a model with {num_layers} layers")
    return windows


def default_schedules(num_layers: int) -> list[str]:
    """A few schedules for the sweep: window T in the lowest quarter, half, three quarters; 2T in half."""
    counts = dict.fromkeys(max(1, round(num_layers * f)) for f in (0.25, 0.5, 0.75))
    return [f"T@{k}" for k in counts] + [f"2T@{max(1, num_layers // 2)}"]


def trained_length(ckpt: Path, config: ModelConfig) -> int:
    """T: the config's ``train_length``, else the ``data.seq_len`` of the checkpoint's recipe, else its
    ``max_position_embeddings``."""
    if config.train_length:
        return config.train_length
    recipe = ckpt / "recipe.toml"
    if recipe.is_file():
        seq_len = tomllib.loads(recipe.read_text()).get("data", {}).get("seq_len")
        if isinstance(seq_len, int) and seq_len > 0:
            return seq_len
    return config.max_position_embeddings


@dataclass
class Method:
    """One row of the sweep: a name and the settings it switches on."""

    name: str
    rope_ntk: str = "none"
    logn_attn: bool = False
    layer_windows: list[int] = field(default_factory=list)


def sweep_methods(names: list[str], schedules: list[str], num_layers: int, trained: int) -> list[Method]:
    """The rows for ``--methods`` (``ntk+logn+window`` expands to one row per schedule)."""
    rows = []
    for name in names:
        if name not in METHODS:
            raise UserError(f"--methods: unknown method {name!r} (choose from {', '.join(METHODS)})")
        if name == "plain":
            rows.append(Method(name))
        elif name == "ntk":
            rows.append(Method(name, "dynamic"))
        elif name == "ntk+logn":
            rows.append(Method(name, "dynamic", True))
        elif name == "ntk-continuous+logn":
            rows.append(Method(name, "continuous", True))
        else:
            rows += [Method(f"{name}[{spec}]", "dynamic", True, parse_window_spec(spec, num_layers, trained))
                     for spec in schedules]
    return rows


def length_chunks(documents: list[list[int]], length: int, max_tokens: int) -> list[list[int]]:
    """Non-overlapping chunks of exactly ``length`` tokens from documents at least that long, in order,
    until ``max_tokens`` tokens are taken."""
    chunks: list[list[int]] = []
    for doc in documents:
        for start in range(0, len(doc) - length + 1, length):
            if (len(chunks) + 1) * length > max_tokens:
                return chunks
            chunks.append(doc[start:start + length])
    return chunks


@torch.no_grad()
def perplexity(model: QwenModel, chunks: list[list[int]], batch_tokens: int = 8192) -> float:
    """exp(mean next-token cross-entropy) over every position of every chunk."""
    length = len(chunks[0])
    per_batch = max(1, batch_tokens // length)
    total, count = 0.0, 0
    for first in range(0, len(chunks), per_batch):
        ids = torch.tensor(chunks[first:first + per_batch])
        hidden = model.hidden_states(ids[:, :-1])
        loss, n = linear_cross_entropy(hidden, model.lm_head.weight, ids[:, 1:], backend=model.config.kernels)
        total, count = total + loss.item(), count + int(n)
    return math.exp(total / count)


def read_documents(corpus: list[str], tokenizer, text_field: str = "text") -> list[list[int]]:
    docs = [tokenizer.encode(text) for text in iter_documents(corpus, ReadStats(), text_field=text_field)]
    if not docs:
        raise UserError(f"{', '.join(corpus)}: no documents")
    return docs


def run_sweep(model: QwenModel, documents: list[list[int]], lengths: list[int], methods: list[Method],
              trained: int, tokens_per_length: int, on_cell=lambda: None) -> dict:
    """Perplexity of every method at every length (``None`` where no document is long enough)."""
    chunks = {length: length_chunks(documents, length + 1, tokens_per_length) for length in lengths}
    table: dict[str, dict[int, float | None]] = {}
    for method in methods:
        model.set_context_extension(method.rope_ntk, method.logn_attn, method.layer_windows, trained)
        table[method.name] = {}
        for length in lengths:
            table[method.name][length] = perplexity(model, chunks[length]) if chunks[length] else None
            on_cell()
    model.set_context_extension(train_length=0)
    return {"trained_length": trained, "lengths": lengths,
            "tokens": {length: len(c) * length for length, c in chunks.items()},
            "methods": {m.name: {"rope_ntk": m.rope_ntk, "logn_attn": m.logn_attn, "layer_windows": m.layer_windows}
                        for m in methods},
            "perplexity": table}


def plot_sweep(result: dict, target) -> None:
    """Perplexity against length, log scale, one line per method, T marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, row in result["perplexity"].items():
        points = [(length, ppl) for length, ppl in row.items() if ppl is not None]
        ax.plot(*zip(*points, strict=True), marker="o", label=name)
    ax.axvline(result["trained_length"], color="grey", linestyle=":", label="training length T")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length (tokens)")
    ax.set_ylabel("perplexity")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(target, dpi=120, format="png")
    plt.close(fig)

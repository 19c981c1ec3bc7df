"""Compression of tokenizers on corpora (``qwen tokenize stats``), the report's Figure 3 for your data.

For each corpus (a file or directory, read with :mod:`qwen_cli.corpus` up to
``max_bytes`` of NFC text) and each tokenizer: UTF-8 bytes, characters, tokens, bytes per
token (higher compresses better) and tokens per character, plus the token count relative to
the first tokenizer given. Results come as a table, JSON, or a PNG bar chart.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from qwen_cli.corpus import ReadStats, iter_documents
from qwen_cli.errors import UserError
from qwen_cli.fsutil import atomic_file
from qwen_cli.terminal import print_table
from qwen_cli.tokenizer.core import load_tokenizer


def read_sample(corpus: str, max_bytes: int, text_field: str, on_error: str) -> list[str]:
    """NFC documents of ``corpus`` until ``max_bytes`` UTF-8 bytes (the last one cut to fit)."""
    sample, total = [], 0
    for doc in iter_documents([corpus], ReadStats(), text_field=text_field, on_error=on_error):
        doc = unicodedata.normalize("NFC", doc)
        room = max_bytes - total
        data = doc.encode("utf-8", errors="replace")
        if len(data) > room:
            doc = data[:room].decode("utf-8", errors="ignore")
            if doc:
                sample.append(doc)
            break
        sample.append(doc)
        total += len(data)
    if not sample:
        raise UserError(f"{corpus}: no text to measure")
    return sample


def compression_table(tokenizers: list[str], corpora: list[str], max_bytes: int = 2_000_000,
                      text_field: str = "text", on_error: str = "error") -> dict:
    """Rows of compression statistics for every (corpus, tokenizer) pair."""
    if max_bytes < 1:
        raise UserError(f"--max-bytes must be positive, not {max_bytes}")
    loaded = {name: load_tokenizer(name) for name in dict.fromkeys(tokenizers)}
    rows = []
    for corpus in dict.fromkeys(corpora):
        sample = read_sample(corpus, max_bytes, text_field, on_error)
        n_bytes = sum(len(d.encode("utf-8", errors="replace")) for d in sample)
        n_chars = sum(len(d) for d in sample)
        first_tokens = None
        for name, tok in loaded.items():
            tokens = sum(len(ids) for ids in tok.encode_batch(sample, num_threads=os.cpu_count() or 1))
            first_tokens = first_tokens or tokens
            rows.append({"corpus": corpus, "tokenizer": name, "bytes": n_bytes, "chars": n_chars,
                         "tokens": tokens, "bytes_per_token": round(n_bytes / tokens, 4),
                         "tokens_per_char": round(tokens / n_chars, 4),
                         "tokens_vs_first": round(tokens / first_tokens, 4)})
    return {"tokenizers": list(loaded), "corpora": list(dict.fromkeys(corpora)), "max_bytes": max_bytes,
            "rows": rows}


def _short(name: str) -> str:
    """A path's last component (names such as ``qwen`` stay as they are)."""
    return Path(name).name or name


def render_table(result: dict, console: Console) -> None:
    """Print the rows as a rich table; names (user paths) are printed literally, never as markup."""
    first = _short(result["tokenizers"][0])
    table = Table(title="Tokenizer compression (bytes/token: higher is better)")
    for column in ("corpus", "tokenizer", "bytes", "tokens", "B/tok", "tok/char", f"vs {first}"):
        table.add_column(Text(column), justify="left" if column in ("corpus", "tokenizer") else "right",
                         overflow="fold")
    for row in result["rows"]:
        table.add_row(Text(_short(row["corpus"])), Text(_short(row["tokenizer"])), f"{row['bytes']:,}",
                      f"{row['tokens']:,}", f"{row['bytes_per_token']:.2f}", f"{row['tokens_per_char']:.3f}",
                      f"{row['tokens_vs_first']:.3f}")
    print_table(console, table)


def plot_compression(result: dict, path: str | os.PathLike) -> None:
    """Grouped bar charts (bytes per token, tokens per character) per corpus, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora, names = result["corpora"], result["tokenizers"]
    by_key = {(r["corpus"], r["tokenizer"]): r for r in result["rows"]}
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 2.2 * len(corpora) * 2), 4.2))
    width = 0.8 / len(names)
    for ax, metric, label in ((axes[0], "bytes_per_token", "bytes per token (higher = better)"),
                              (axes[1], "tokens_per_char", "tokens per character (lower = better)")):
        for j, name in enumerate(names):
            xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(corpora))]
            values = [by_key[(c, name)][metric] for c in corpora]
            bars = ax.bar(xs, values, width, label=_short(name))
            ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
        ax.set_xticks(range(len(corpora)), [_short(c) for c in corpora], rotation=15)
        ax.set_title(label, fontsize=10)
        ax.margins(y=0.15)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(names), fontsize=9, frameon=False)
    fig.suptitle("Tokenizer compression by corpus")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    try:
        with atomic_file(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=120)
    except OSError as exc:
        raise UserError(f"{path}: cannot write plot ({exc.strerror})") from None
    finally:
        plt.close(fig)

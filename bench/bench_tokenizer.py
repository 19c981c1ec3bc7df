"""Encode throughput of our tokenizer vs Hugging Face ``tokenizers`` on the same Qwen vocabulary.

Corpus: Python standard-library source files (present on every machine) up to ``--mb``
megabytes, plus the English and Chinese test fixtures. Ours is tiktoken under
``qwen_cli.tokenizer``: one process, and N worker processes (as ``qwen tokenize encode``
runs it; ids travel back to the parent inside the timing). The reference is the fast
tokenizer loaded from the ``tokenizer.json`` we export: single calls for 1 worker,
``encode_batch`` (Rust threads on all cores) for N. Ids must be identical. Prints MB/s
(best of ``--repeat``) and our speed-up.

    flock /tmp/team/bench.lock .venv/bin/python bench/bench_tokenizer.py --mb 8
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qwen_cli.tokenizer import load_tokenizer

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tokenizer"
_worker_tok = None


def _init_worker(tokenizer_dir: str) -> None:
    global _worker_tok
    _worker_tok = load_tokenizer(tokenizer_dir)


def _encode_chunk(texts: list[str]) -> list[np.ndarray]:
    """Ids as uint32 arrays: they cross the process boundary as raw bytes, as in the shard writer."""
    return [np.asarray(ids, dtype=np.uint32) for ids in _worker_tok.encode_batch(texts)]


def chunks(texts: list[str], n: int) -> list[list[str]]:
    """``texts`` dealt round-robin into ``n`` chunks (balances large and small files)."""
    return [texts[i::n] for i in range(n)]


def corpus(megabytes: float) -> list[str]:
    """Stdlib .py files (sorted, valid UTF-8) up to ``megabytes``, plus the prose fixtures."""
    texts = [(FIXTURES / "hamlet_excerpt.txt").read_text(encoding="utf-8"),
             (FIXTURES / "lunyu.jsonl").read_text(encoding="utf-8")]
    budget = megabytes * 1e6
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
        if sum(len(t) for t in texts) >= budget:
            break
    return texts


def best_time(fn: Callable[[], list], repeat: int) -> tuple[float, list]:
    best, result = float("inf"), []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=8.0, help="corpus size in MB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    from tokenizers import Tokenizer as HFTokenizer

    tok = load_tokenizer("qwen")
    texts = corpus(args.mb)
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    n_chunks = 8 * args.workers
    order = [i for c in chunks(list(range(len(texts))), n_chunks) for i in c]
    with tempfile.TemporaryDirectory() as tmp:
        tok.save(tmp)
        hf = HFTokenizer.from_file(str(Path(tmp) / "tokenizer.json"))
        pool = multiprocessing.get_context("spawn").Pool(args.workers, _init_worker, (tmp,))
        pool.map(_encode_chunk, [["warm-up"]] * args.workers)

    def ours_parallel() -> list[np.ndarray]:
        flat = [ids for part in pool.map(_encode_chunk, chunks(texts, n_chunks)) for ids in part]
        result: list[np.ndarray] = [np.zeros(0, np.uint32)] * len(texts)
        for i, ids in zip(order, flat, strict=True):
            result[i] = ids
        return result

    runs = {
        ("ours (tiktoken)", 1): lambda: tok.encode_batch(texts),
        ("ours (tiktoken)", args.workers): ours_parallel,
        ("HF tokenizers", 1): lambda: [hf.encode(t, add_special_tokens=False).ids for t in texts],
        ("HF tokenizers", args.workers): lambda: [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)],
    }
    speed, reference = {}, None
    with pool:
        for (name, workers), fn in runs.items():
            seconds, ids = best_time(fn, args.repeat)
            ids = [x.tolist() if isinstance(x, np.ndarray) else x for x in ids]
            reference = reference or ids
            assert ids == reference, f"{name} with {workers} workers gives different ids"
            speed[(name, workers)] = megabytes / seconds
    tokens = sum(len(ids) for ids in reference)
    print(f"corpus: {len(texts)} documents, {megabytes:.2f} MB, {tokens:,} tokens (ids identical across all runs)")
    print(f"{'tokenizer':<18}{'workers':>8}{'MB/s':>10}")
    for (name, workers), mbps in speed.items():
        print(f"{name:<18}{workers:>8}{mbps:>10.2f}")
    for workers in (1, args.workers):
        ratio = speed[("ours (tiktoken)", workers)] / speed[("HF tokenizers", workers)]
        print(f"ratio ours/HF at {workers} worker(s): {ratio:.2f}x")


if __name__ == "__main__":
    main()

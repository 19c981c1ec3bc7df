"""The output projection + cross-entropy at the Qwen-1.8B training shapes: fused (chunked) vs naive full logits.

One micro batch of the 1.8B recipe is 8 × 2048 = 16,384 tokens of hidden width 2048 against the
151,936-row output matrix. Each run is forward + backward under bf16 autocast with an fp32 master
weight (as ``qwen pretrain`` trains):

* ``naive``: ``reference_linear_cross_entropy`` — the whole [16384, 151936] logits (bf16, then fp32
  inside ``F.cross_entropy``), what transformers does;
* ``fused triton`` / ``fused torch``: ``linear_cross_entropy`` with its chunk size left to the kernel
  (``chunk = 0``: measured once per shape and device, see ``kernels.cross_entropy.tuned_chunk``);
* ``fused triton, chunk N``: fixed chunk sizes, so the table shows what the choice bought.

Runs are interleaved (``bench/interleave.py``); each time is the median, each ratio the median (min–max)
of per-round ratios against ``naive``; "peak GiB" is the most memory a call allocated above what was
resident before it.

    python bench/bench_loss.py [--tokens 16384] [--repeats 5] [--json out.json]

Without CUDA it prints one line saying so and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interleave import cuda_peak_tracked, interleaved_times  # noqa: E402

FIXED_CHUNKS = (2048, 4096, 8192)


def loss_runs(tokens: int, hidden: int, vocab: int, device: torch.device) -> dict[str, Callable[[], None]]:
    """Forward + backward of every variant on the same inputs."""
    from qwen_cli.kernels.cross_entropy import linear_cross_entropy, reference_linear_cross_entropy

    gen = torch.Generator(device=device).manual_seed(0)
    h = torch.randn(tokens, hidden, device=device, generator=gen, dtype=torch.bfloat16).requires_grad_()
    w = (0.02 * torch.randn(vocab, hidden, device=device, generator=gen)).requires_grad_()
    labels = torch.randint(0, vocab, (tokens,), device=device, generator=gen)

    def run(fn) -> Callable[[], None]:
        def call() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss, n = fn()
            (loss / n).backward()
            h.grad = w.grad = None
        return call

    runs = {"naive": run(lambda: reference_linear_cross_entropy(h, w, labels)),
            "fused triton": run(lambda: linear_cross_entropy(h, w, labels, backend="triton")),
            "fused torch": run(lambda: linear_cross_entropy(h, w, labels, backend="torch"))}
    for chunk in FIXED_CHUNKS:
        runs[f"fused triton, chunk {chunk}"] = run(lambda c=chunk: linear_cross_entropy(h, w, labels, c, backend="triton"))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_loss: no CUDA device here (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    from qwen_cli.kernels.cross_entropy import tuned_chunks

    device = torch.device("cuda")
    runs = loss_runs(args.tokens, args.hidden, args.vocab, device)
    for run in runs.values():  # warm-up: compiles the Triton kernels and tunes the chunk outside the timing
        run()
    peaks: dict[str, list[float]] = {name: [] for name in runs}
    times = interleaved_times({name: cuda_peak_tracked(run, peaks[name]) for name, run in runs.items()}, args.repeats)
    rows = []
    for name, ts in times.items():
        ratios = sorted(t / n for t, n in zip(ts, times["naive"], strict=True))
        rows.append({"run": name, "ms": 1e3 * statistics.median(ts), "vs_naive": statistics.median(ratios),
                     "vs_naive_min": ratios[0], "vs_naive_max": ratios[-1], "peak_gib": max(peaks[name]) / 2**30})
    chunk = sorted({c for key, c in tuned_chunks().items() if key[1] == args.tokens})
    print(f"{torch.cuda.get_device_name(device)}: {args.tokens} tokens × {args.hidden} → {args.vocab}, bf16 autocast, "
          f"fp32 weight, forward + backward, median of {args.repeats} interleaved rounds; tuned chunk (triton, torch) {chunk}")
    print("| run | ms | time vs naive (min-max) | peak GiB |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['run']} | {r['ms']:.1f} | {r['vs_naive']:.2f}x ({r['vs_naive_min']:.2f}-{r['vs_naive_max']:.2f}) "
              f"| {r['peak_gib']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"device": torch.cuda.get_device_name(device), "tokens": args.tokens,
                                         "tuned_chunk": chunk, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

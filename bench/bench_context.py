"""What dynamic NTK costs while decoding: ours with the context-extension settings vs ours plain.

Same weights (hidden 256, 4 layers, vocabulary 8192, fp32, random), one prompt of ``--prompt-len``
tokens and ``--new-tokens`` greedy tokens with training length ``--train-length``, so decoding
crosses NTK buckets (every crossing re-rotates the whole KV cache once). Timed repeats of the
two settings are interleaved (plain, extended, plain, extended …); the table gives the median
tokens/s of each, the median and spread of the per-pair ratio, and how many re-rotations ran.

    python bench/bench_context.py [--prompt-len 100] [--new-tokens 400] [--train-length 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from qwen_cli.inference.generate import generate
from qwen_cli.model import KVCache, ModelConfig, QwenModel


def timed(model: QwenModel, prompt: list[int], new_tokens: int) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        generate(model, [prompt], new_tokens)
    return new_tokens / (time.perf_counter() - start)


def count_rerotations(model: QwenModel, prompt: list[int], new_tokens: int) -> int:
    """Re-rotations of the cache during one generation (wraps KVCache.rerotate to count real ones)."""
    calls = 0
    original = KVCache.rerotate

    def counting(cache, inv_freq):
        nonlocal calls
        if cache.inv_freq is not None and cache.length and not torch.equal(cache.inv_freq, inv_freq):
            calls += 1
        original(cache, inv_freq)

    KVCache.rerotate = counting
    try:
        with torch.no_grad():
            generate(model, [prompt], new_tokens)
    finally:
        KVCache.rerotate = original
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-len", type=int, default=100)
    parser.add_argument("--new-tokens", type=int, default=400)
    parser.add_argument("--train-length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=8192, hidden_size=256, num_layers=4, num_heads=4, intermediate_size=688,
                         max_position_embeddings=args.prompt_len + args.new_tokens)
    plain = QwenModel(config).eval()
    extended = QwenModel(config).eval()
    extended.load_state_dict(plain.state_dict())
    extended.set_context_extension("dynamic", True, [], args.train_length)
    prompt = torch.randint(0, 8192, (args.prompt_len,)).tolist()
    timed(plain, prompt, 8), timed(extended, prompt, 8)  # warm-up
    rates: dict[str, list[float]] = {"plain": [], "ntk+logn": []}
    for _ in range(args.repeats):
        rates["plain"].append(timed(plain, prompt, args.new_tokens))
        rates["ntk+logn"].append(timed(extended, prompt, args.new_tokens))
    ratios = [e / p for p, e in zip(rates["plain"], rates["ntk+logn"], strict=True)]
    print(f"decode {args.new_tokens} tokens after {args.prompt_len}, T = {args.train_length}, "
          f"{count_rerotations(extended, prompt, args.new_tokens)} cache re-rotations, {args.repeats} interleaved pairs")
    for name, values in rates.items():
        print(f"  {name:9s} median {statistics.median(values):8.1f} tok/s")
    print(f"  ratio ntk+logn / plain: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()

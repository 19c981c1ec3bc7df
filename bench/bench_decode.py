"""Decode throughput: ``qwen_cli.inference.generate`` vs transformers' ``generate`` on the same weights.

The spine's benchmark config (hidden 512, 8 layers, 8 heads, FFN 1376, vocabulary 151,936,
fp32, random weights), exported with ``save_model`` and loaded by ``AutoModelForCausalLM``.
Both decode greedily for ``--new-tokens`` tokens after a ``--prompt-len`` token prompt (no stop
token, so every row runs to the end); the number is new tokens per second (prefill included),
best of ``--repeats``. Greedy outputs of the two engines are compared too.

    flock /tmp/team/bench.lock python bench/bench_decode.py [--batch 1 8] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from qwen_cli.checkpoint import save_model
from qwen_cli.inference.generate import generate
from qwen_cli.model import ModelConfig, QwenModel


def best_rate(fn, new_tokens: int, repeats: int) -> tuple[float, list]:
    fn_out = fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn_out = fn()
        best = min(best, time.perf_counter() - start)
    return new_tokens / best, fn_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = QwenModel(ModelConfig(hidden_size=512, num_layers=8, num_heads=8, intermediate_size=1376,
                                  vocab_size=151936)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_model(f"{tmp}/m", model)
        hf = AutoModelForCausalLM.from_pretrained(f"{tmp}/m", torch_dtype=torch.float32).eval()
    hf.generation_config.pad_token_id = 0
    print(f"hidden 512, 8 layers, vocab 151936, fp32, prompt {args.prompt_len}, {args.new_tokens} new tokens, "
          f"{torch.get_num_threads()} threads")
    for b in args.batch:
        prompts = torch.randint(0, 150000, (b, args.prompt_len), generator=torch.Generator().manual_seed(b))
        n = b * args.new_tokens
        ours, ours_out = best_rate(lambda p=prompts: generate(model, p.tolist(), args.new_tokens), n, args.repeats)

        def hf_generate(p=prompts):
            with torch.inference_mode():
                out = hf.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=args.new_tokens,
                                  min_new_tokens=args.new_tokens, do_sample=False)
            return out[:, args.prompt_len :].tolist()

        ref, ref_out = best_rate(hf_generate, n, args.repeats)
        agree = sum(a == r for a, r in zip(ours_out, ref_out, strict=True))
        print(f"batch {b}: qwen_cli {ours:7.1f} tok/s   transformers {ref:7.1f} tok/s   ratio {ours / ref:.2f}x   "
              f"identical greedy rows {agree}/{b}")


if __name__ == "__main__":
    main()

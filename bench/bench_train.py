"""Training throughput: our QwenModel + trainer pieces vs transformers' Qwen2ForCausalLM.

Same config (hidden 512, 8 layers, 8 heads, FFN 1376, vocab 151,936, sequence 512), same
batch of random token ids, in one process; timed steps of the two models alternate and the
median step time counts, so load from other processes hits both alike:

* ``eager``: float32, no compilation. Ours: fused output-projection + cross-entropy
  (``qwen_cli.kernels.cross_entropy``), fused AdamW. Theirs: ``model(input_ids, labels=...)`` and
  ``torch.optim.AdamW`` with its defaults.
* ``compile``: torch.compile + fused AdamW for both, float32 (ours compiles each block).
* ``best``: torch.compile + bf16 autocast + fused AdamW for both. On CPUs without native bf16
  (AVX2 only) bf16 matmuls are emulated and far slower than fp32, so ``compile`` is the fast
  mode there; ``best`` takes many minutes on such a CPU and is not part of ``all``.

Prints tokens/s per model and mode, the ratio ours / theirs, and our achieved FLOP/s
(``model.flops_per_token`` · tokens/s) as a fraction of this CPU's measured matmul peak in the
mode's dtype. Run under ``flock /tmp/team/bench.lock`` when the machine is shared:

    flock /tmp/team/bench.lock python bench/bench_train.py --mode all --steps 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import nullcontext

import torch

from qwen_cli.kernels.cross_entropy import linear_cross_entropy
from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.train.mfu import measure_peak_flops

CONFIG = ModelConfig(vocab_size=151936, hidden_size=512, num_layers=8, num_heads=8, intermediate_size=1376,
                     max_position_embeddings=512)


def ours(compiled: bool, bf16: bool):
    torch.manual_seed(0)
    model = QwenModel(CONFIG).train()
    if compiled:
        for block in model.layers:
            block.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=True)

    def step(ids: torch.Tensor) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            hidden = model.hidden_states(ids[:, :-1])
            loss, n = linear_cross_entropy(hidden, model.lm_head.weight, ids[:, 1:])
            loss = loss / n
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return model, step


def theirs(compiled: bool, bf16: bool):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=CONFIG.vocab_size, hidden_size=CONFIG.hidden_size,
                         intermediate_size=CONFIG.intermediate_size, num_hidden_layers=CONFIG.num_layers,
                         num_attention_heads=CONFIG.num_heads, num_key_value_heads=CONFIG.num_heads,
                         max_position_embeddings=CONFIG.max_position_embeddings, tie_word_embeddings=False,
                         attn_implementation="sdpa", use_cache=False)
    model = Qwen2ForCausalLM(config).train()
    forward = torch.compile(model) if compiled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=True if compiled else None)

    def step(ids: torch.Tensor) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            loss = forward(input_ids=ids[:, :-1], labels=ids[:, :-1]).loss  # HF shifts labels itself
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return model, step


def compare(compiled: bool, bf16: bool, ids: torch.Tensor, steps: int, warmup: int) -> dict[str, tuple[float, float]]:
    """Interleave timed steps of both models (so a busy machine slows both alike); median step time."""
    steps_by_name = {"transformers": theirs(compiled, bf16)[1], "ours": ours(compiled, bf16)[1]}
    for name, step in steps_by_name.items():
        start = time.perf_counter()
        for _ in range(warmup):
            step(ids)
        print(f"  {name}: {warmup} warm-up step(s) (compilation included) {time.perf_counter() - start:.1f} s",
              file=sys.stderr, flush=True)
    times: dict[str, list[float]] = {name: [] for name in steps_by_name}
    losses: dict[str, float] = {}
    for _ in range(steps):
        for name, step in steps_by_name.items():
            start = time.perf_counter()
            losses[name] = step(ids)
            times[name].append(time.perf_counter() - start)
            print(f"  {name}: step {times[name][-1]:.1f} s", file=sys.stderr, flush=True)
    return {name: (ids[:, :-1].numel() / statistics.median(t), losses[name]) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("eager", "compile", "best", "all"), default="all")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per model and mode")
    parser.add_argument("--batch", type=int, default=2, help="sequences of 512 per step")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ids = torch.randint(0, 151643, (args.batch, CONFIG.max_position_embeddings + 1),
                        generator=torch.Generator().manual_seed(0))
    with torch.device("meta"):
        flops_per_token = QwenModel(CONFIG).flops_per_token(CONFIG.max_position_embeddings)
    results = {"threads": torch.get_num_threads(), "batch_tokens": ids[:, :-1].numel(), "steps": args.steps}
    modes = ("eager", "compile") if args.mode == "all" else (args.mode,)
    for mode in modes:
        compiled, bf16 = mode != "eager", mode == "best"
        warmup = 1  # compilation happens in the first step
        peak = measure_peak_flops(torch.device("cpu"), torch.bfloat16 if bf16 else torch.float32, seconds=1.0)
        measured = compare(compiled, bf16, ids, args.steps, warmup)
        (ours_tps, ours_loss), (theirs_tps, theirs_loss) = measured["ours"], measured["transformers"]
        results[mode] = {"ours_tok_s": ours_tps, "transformers_tok_s": theirs_tps, "ratio": ours_tps / theirs_tps,
                         "ours_flops": ours_tps * flops_per_token, "matmul_peak_flops": peak,
                         "fraction_of_peak": ours_tps * flops_per_token / peak,
                         "loss_ours": ours_loss, "loss_transformers": theirs_loss}
        r = results[mode]
        if not args.json:
            print(f"{mode:5s}  ours {ours_tps:7.1f} tok/s   transformers {theirs_tps:7.1f} tok/s   "
                  f"ratio {r['ratio']:.2f}x   ours {r['ours_flops'] / 1e9:.1f} GFLOP/s = "
                  f"{r['fraction_of_peak']:.0%} of measured {'bf16/fp32' if bf16 else 'fp32'} matmul peak "
                  f"{peak / 1e9:.1f} GFLOP/s", flush=True)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

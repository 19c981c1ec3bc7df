"""Decode throughput: ``qwen_cli.inference.generate`` vs transformers' ``generate`` on the same weights.

The spine's benchmark config (hidden 512, 8 layers, 8 heads, FFN 1376, vocabulary 151,936,
fp32, random weights), exported with ``save_model`` and loaded by ``AutoModelForCausalLM``.
Both decode greedily for ``--new-tokens`` tokens after a ``--prompt-len`` token prompt (no stop
token, so every row runs to the end). Ours runs in up to three modes: ``eager`` (today's loop),
``compiled`` (static KV cache + torch.compile'd decode step, fp32) and ``int8`` (weight-only int8,
default threshold: here only the output matrix; eager loop). Timed runs of all engines are
interleaved (ours, theirs, ours, theirs …, ``--repeats`` rounds after one untimed warm-up, which
pays the compile); each rate is the median, each ratio the median (min–max) of per-round ratios
against transformers fp32. Greedy outputs are compared with transformers' too.

With ``--ppl-checkpoint`` (default: the tiny demo model, if trained; ``--ppl-only`` skips the
timing) the int8 quality cost is printed as the perplexity of that model, fp32 vs int8 of every linear layer (an upper bound on the
default, which quantises only matrices of >= ``MIN_ELEMENTS`` weights), on held-out token ids (the validation
split of its shards, never trained on).

With ``--model DIR`` the benchmark runs a saved model directory instead (e.g. the tiny demo model
``runs/tiny/sft/final``, whose decode time is mostly per-token overhead, or an imported real model).

``--gpu`` is the CUDA benchmark of issue 28 (``scripts/gpu_check.sh`` runs it): a Qwen-1.8B-shaped
model (random weights, bf16) on the GPU, batch 1 and 8, 32-token prompts, 64 new tokens (32 with
``--quick``); ours ``eager``, ``compiled`` (static cache, CUDA-graph replay) and ``int8`` (weight-only,
every linear layer, compiled) against transformers' ``generate`` with its static cache (which
transformers compiles itself), interleaved; each rate is the median, each ratio the median (min–max)
of per-round ratios. The batch-1 rate is also given as a share of the HBM bound: weight bytes per
token over the copy bandwidth measured in the same run. With ``--ppl-checkpoint``/``--ppl-tokens``
the int8 perplexity change of that model is measured on the GPU too. ``--json`` writes the rows
(rewritten after every batch size, so a time limit keeps the finished ones).

    flock /tmp/team/bench.lock python bench/bench_decode.py [--model DIR] [--batch 1 8] [--new-tokens 48] [--modes eager compiled int8]
    python bench/bench_decode.py --gpu [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from interleave import interleaved_times, ratio_summary

from qwen_cli.checkpoint import load_model, save_model
from qwen_cli.inference import static_decode
from qwen_cli.inference.generate import generate
from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.model.config import PRESETS
from qwen_cli.model.quantize import quantize_model
from qwen_cli.tokenizer import load_tokenizer

MODES = ("eager", "compiled", "int8")


@torch.inference_mode()
def heldout_perplexity(model: QwenModel, tokens: np.ndarray, window: int) -> float:
    """exp(mean next-token NLL) over consecutive ``window``-token pieces of ``tokens``."""
    pieces = torch.from_numpy(tokens[: len(tokens) // window * window].astype(np.int64)).view(-1, window)
    pieces = pieces.to(next(model.parameters()).device)
    total, count = 0.0, 0
    for batch in pieces.split(16):
        logits = model(batch[:, :-1])
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten(),
                                                   reduction="sum").item()
        count += batch[:, 1:].numel()
    return float(np.exp(total / count))


def heldout_tokens(checkpoint: Path, heldout: Path, max_chars: int) -> np.ndarray:
    """Token ids of ``heldout``: a ``.bin`` shard (uint32 ids) as is, any other file as text (its first
    ``max_chars`` characters) encoded by the checkpoint's own tokenizer."""
    if heldout.suffix == ".bin":
        return np.fromfile(heldout, dtype="<u4")
    text = heldout.read_text(encoding="utf-8")[:max_chars]
    return np.asarray(load_tokenizer(checkpoint).encode(text), dtype=np.uint32)


def report_perplexity(checkpoint: Path, heldout: Path, max_chars: int) -> None:
    if not (checkpoint / "config.json").is_file() or not heldout.is_file():
        print(f"perplexity: skipped ({checkpoint} or {heldout} missing; train the tiny demo model first)")
        return
    tokens = heldout_tokens(checkpoint, heldout, max_chars)
    fp32 = load_model(checkpoint).eval()
    window = min(128, fp32.config.max_position_embeddings)
    before = heldout_perplexity(fp32, tokens, window)
    after = heldout_perplexity(quantize_model(fp32, "int8", min_elements=0), tokens, window)
    print(f"perplexity on {len(tokens)} held-out tokens ({heldout}), {checkpoint}: fp32 {before:.3f}  "
          f"int8, every linear layer {after:.3f}  change {100 * (after / before - 1):+.2f}%")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hbm_bound(model: QwenModel) -> float:
    """Batch-1 tokens/s if a step only read every weight once at this device's measured copy bandwidth."""
    device = next(model.parameters()).device
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters()) - \
        model.embed_tokens.weight.numel() * model.embed_tokens.weight.element_size()  # one row is read, not all
    src = torch.empty(1 << (30 if device.type == "cuda" else 24), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(6):
        sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        sync(device)
        times.append(time.perf_counter() - start)
    bandwidth = 2 * src.numel() / min(times[1:])  # a copy reads and writes every byte
    return bandwidth / weight_bytes


def gpu_main(args, device: torch.device, shape: dict) -> None:
    """``--gpu``: the decode of a model of ``shape`` (the 1.8B preset) in bf16 on ``device`` (CUDA; the
    tests run it on a tiny CPU model), ours vs transformers' static-cache generate."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from qwen_cli.interop.qwen2 import config_to_hf, to_hf_state_dict

    new_tokens = args.new_tokens or (32 if args.quick else 64)
    repeats = 2 if args.quick else 3
    torch.manual_seed(0)
    config = ModelConfig(**{"vocab_size": 151936, **shape}, max_position_embeddings=2048, init_std=0.02)
    with device:
        model = QwenModel(config).to(torch.bfloat16).eval()
        hf = Qwen2ForCausalLM(Qwen2Config(**config_to_hf(config, torch.bfloat16))).to(torch.bfloat16).eval()
    hf.load_state_dict(to_hf_state_dict(model.state_dict(), config))
    hf.generation_config.pad_token_id = 0
    int8 = quantize_model(copy.deepcopy(model), "int8", min_elements=0)
    bound = hbm_bound(model)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    report = {"device": name, "new_tokens": new_tokens, "prompt_len": args.prompt_len,
              "hbm_bound_tok_s": bound, "rows": []}
    print(f"{report['device']}: hidden {config.hidden_size}, {config.num_layers} layers, bf16, prompt {args.prompt_len}, {new_tokens} new tokens, "
          f"{repeats} interleaved rounds; HBM bound at batch 1: {bound:,.0f} tok/s")
    engines = {"eager": (model, False), "compiled": (model, True), "int8": (int8, True)}
    for b in args.batch:
        prompts = torch.randint(0, config.vocab_size, (b, args.prompt_len), generator=torch.Generator().manual_seed(b))
        outputs: dict[str, list] = {}

        def ours(mode: str, p=prompts, outputs=outputs) -> None:
            net, compiled = engines[mode]
            outputs[mode] = generate(net, p.tolist(), new_tokens, compile=compiled)
            sync(device)

        def theirs(p=prompts.to(device), outputs=outputs) -> None:
            with torch.inference_mode():
                out = hf.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=new_tokens,
                                  min_new_tokens=new_tokens, do_sample=False, cache_implementation="static")
            sync(device)
            outputs["transformers"] = out[:, args.prompt_len :].tolist()

        runs = {"transformers": theirs, **{mode: (lambda m=mode: ours(m)) for mode in args.modes}}
        theirs()  # an extra warm-up: transformers compiles on its first static-cache calls
        times = interleaved_times(runs, repeats)
        n = b * new_tokens
        for mode in args.modes:
            rate, theirs_rate = n / statistics.median(times[mode]), n / statistics.median(times["transformers"])
            ratios = sorted(t / o for o, t in zip(times[mode], times["transformers"], strict=True))
            agree = sum(a == r for a, r in zip(outputs[mode], outputs["transformers"], strict=True))
            report["rows"].append({"mode": mode, "batch": b, "tok_s": rate, "transformers_tok_s": theirs_rate,
                                   "vs_transformers": statistics.median(ratios), "identical": agree,
                                   "ratio_text": ratio_summary(times[mode], times["transformers"])})
            print(f"batch {b}: ours {mode:8s} {rate:8.1f} tok/s  transformers static {theirs_rate:8.1f} tok/s  "
                  f"ratio {ratio_summary(times[mode], times['transformers'])}  identical greedy rows {agree}/{b}")
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
    if args.ppl_checkpoint and (args.ppl_checkpoint / "config.json").is_file() and args.ppl_tokens.is_file():
        tokens = heldout_tokens(args.ppl_checkpoint, args.ppl_tokens, args.ppl_chars)[:65536]
        real = load_model(args.ppl_checkpoint, device=device, dtype=torch.bfloat16).eval()
        window = min(512, real.config.max_position_embeddings)
        before = heldout_perplexity(real, tokens, window)
        after = heldout_perplexity(quantize_model(real, "int8", min_elements=0), tokens, window)
        report["int8_ppl"] = {"what": f"{args.ppl_checkpoint.name} of {args.ppl_checkpoint.parent.name}, bf16 vs int8 "
                              f"every linear, {len(tokens)} held-out tokens", "before": before, "after": after}
        print(f"int8 perplexity: bf16 {before:.3f}  int8 {after:.3f}  change {100 * (after / before - 1):+.2f}%")
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=0, help="default: 48 (--gpu: 64, --quick 32)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--model", type=Path, default=None,
                        help="a model directory to benchmark (default: the random-weight bench config)")
    parser.add_argument("--ppl-checkpoint", type=Path, default=Path("runs/tiny/pretrain/final"))
    parser.add_argument("--ppl-tokens", type=Path, default=Path("runs/tiny/shards/val/shard_00000.bin"),
                        help="held-out ids (.bin shard) or a text file, encoded by the checkpoint's tokenizer")
    parser.add_argument("--ppl-chars", type=int, default=40_000, help="characters read from a text --ppl-tokens")
    parser.add_argument("--ppl-only", action="store_true", help="only the int8 perplexity check")
    parser.add_argument("--gpu", action="store_true", help="the CUDA benchmark at the 1.8B shapes (see above)")
    parser.add_argument("--quick", action="store_true", help="--gpu: 32 new tokens, 2 rounds")
    parser.add_argument("--json", type=Path, help="--gpu: write the rows here")
    args = parser.parse_args(argv)
    if args.gpu:
        if not torch.cuda.is_available():
            print("bench_decode --gpu: no CUDA device here (torch.cuda.is_available() is False)", file=sys.stderr)
            sys.exit(2)
        return gpu_main(args, torch.device("cuda"), PRESETS["qwen-1.8b"])
    args.new_tokens = args.new_tokens or 48
    if args.ppl_only:
        report_perplexity(args.ppl_checkpoint, args.ppl_tokens, args.ppl_chars)
        return
    from transformers import AutoModelForCausalLM

    if args.model is not None:
        model = load_model(args.model).eval()
        hf = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32).eval()
    else:
        torch.manual_seed(0)
        model = QwenModel(ModelConfig(hidden_size=512, num_layers=8, num_heads=8, intermediate_size=1376,
                                      vocab_size=151936)).eval()
        with tempfile.TemporaryDirectory() as tmp:
            save_model(f"{tmp}/m", model)
            hf = AutoModelForCausalLM.from_pretrained(f"{tmp}/m", torch_dtype=torch.float32).eval()
    cfg = model.config
    hf.generation_config.pad_token_id = 0
    int8 = quantize_model(copy.deepcopy(model), "int8") if "int8" in args.modes else None
    engines = {"eager": (model, False), "compiled": (model, True), "int8": (int8, False)}
    print(f"{args.model or 'random weights'}: hidden {cfg.hidden_size}, {cfg.num_layers} layers, "
          f"vocab {cfg.vocab_size}, fp32, prompt {args.prompt_len}, {args.new_tokens} new tokens, "
          f"{torch.get_num_threads()} threads, {args.repeats} interleaved rounds")
    for b in args.batch:
        prompts = torch.randint(0, min(cfg.vocab_size, 150000), (b, args.prompt_len), generator=torch.Generator().manual_seed(b))
        outputs: dict[str, list] = {}

        def ours(mode: str, p=prompts, outputs=outputs):
            net, compiled = engines[mode]
            outputs[mode] = generate(net, p.tolist(), args.new_tokens, compile=compiled)

        def theirs(p=prompts, outputs=outputs):
            with torch.inference_mode():
                out = hf.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=args.new_tokens,
                                  min_new_tokens=args.new_tokens, do_sample=False)
            outputs["transformers"] = out[:, args.prompt_len :].tolist()

        runs = {}
        for mode in args.modes:
            runs[mode] = lambda m=mode: ours(m)
            runs[f"transformers/{mode}"] = theirs
        start = time.perf_counter()
        times = interleaved_times(runs, args.repeats)
        compile_s = sum(s for (_, batch, _), s in static_decode.compile_seconds.items() if batch == b)
        n = b * args.new_tokens
        ref = [t for name, ts in times.items() if name.startswith("transformers") for t in ts]
        print(f"batch {b}: transformers fp32 {n / statistics.median(ref):7.1f} tok/s   "
              f"(compile paid once in the warm-up: {compile_s:.1f} s; whole batch {time.perf_counter() - start:.0f} s)")
        for mode in args.modes:
            agree = sum(a == r for a, r in zip(outputs[mode], outputs["transformers"], strict=True))
            print(f"  qwen_cli {mode:8s} {n / statistics.median(times[mode]):7.1f} tok/s   "
                  f"ratio {ratio_summary(times[mode], times[f'transformers/{mode}'])}   "
                  f"identical greedy rows {agree}/{b}")
    report_perplexity(args.ppl_checkpoint, args.ppl_tokens, args.ppl_chars)


if __name__ == "__main__":
    main()

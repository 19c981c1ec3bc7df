"""Training throughput and MFU on one GPU at the Qwen-1.8B recipe's shapes: ours vs transformers' Qwen2.

Shapes come from ``recipes/qwen-1.8b/pretrain.toml`` (hidden 2048, 24 layers, 16 heads, FFN 5504,
vocabulary 151,936, sequence 2048, micro batch 8); ``--quick`` keeps the widths and vocabulary but
runs 2 layers on 2 sequences of 512 tokens. One training step = forward, backward and a fused AdamW
step, with fp32 master weights under bf16 autocast (as ``qwen pretrain`` trains). In the same run:

* ours as a recipe runs it (``[model] kernels = "auto"``: Triton kernels eager, inductor's fusion of the
  references under compile), with every fused op (``kernels = "triton"``, flash-attn when installed),
  then each op switched back to its plain-torch reference on its own (the ablation), and all of them at
  once; the ablation only compiled (what the trainer runs), eager only all vs none;
* transformers' ``Qwen2ForCausalLM`` with the same config (flash-attention-2 when installed, else sdpa);
* each of the above eager and under ``torch.compile`` (ours compiles each block).

All runs share one model per engine and are timed interleaved (``bench/interleave.py``: A, B, C, A,
B, C …, ``--repeats`` rounds after warm-ups), so clock and thermal drift land on every run alike.
MFU = tokens/s · FLOPs per token (``QwenModel.flops_per_token``, the same for both engines) / the GPU's
datasheet bf16 dense peak, looked up from ``torch.cuda.get_device_name`` (``--peak-tflops`` for a GPU
not in :data:`DATASHEET_BF16_TFLOPS`). "step peak" is the most memory a step allocated above what
was resident before it (activations, gradients' transients, logits).

    python bench/bench_gpu.py --quick          # a minute or two, any CUDA GPU
    python bench/bench_gpu.py                  # the full 1.8B shapes (H200: fits as is)
    python bench/bench_gpu.py --batch 4        # on an 80 GB GPU: both engines' fp32 weights + AdamW (~59 GB) stay resident

Without CUDA it prints one line saying so and exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "qwen-1.8b" / "pretrain.toml"
VOCAB = 151936  # the Qwen tokenizer's padded vocabulary (the recipe takes it from the tokenizer)

# (substring of torch.cuda.get_device_name, label, dense bf16 tensor TFLOPS from the vendor datasheet);
# the first match wins, so the specific names come before the general ones
DATASHEET_BF16_TFLOPS: list[tuple[str, str, float]] = [
    ("GH200", "GH200", 989.0),
    ("H200", "H200", 989.0),
    ("H100 PCIe", "H100 PCIe", 756.0),
    ("H100 NVL", "H100 NVL", 835.0),
    ("H100", "H100 SXM", 989.0),
    ("H800", "H800 SXM", 989.0),
    ("B200", "B200", 2250.0),
    ("A100", "A100", 312.0),
    ("A800", "A800", 312.0),
    ("L40S", "L40S", 362.0),
    ("L40", "L40", 181.0),
    ("L4", "L4", 121.0),
    ("A10G", "A10G", 70.0),
    ("A10", "A10", 125.0),
    ("RTX 6000 Ada", "RTX 6000 Ada", 364.0),
    ("A6000", "RTX A6000", 155.0),
    ("RTX 4090", "RTX 4090", 165.0),
    ("RTX 3090", "RTX 3090", 71.0),
]

OPS = ("rms_norm", "swiglu", "rotary")  # the decoder's fused ops, by their names in qwen_cli.model.decoder


def datasheet_peak(device_name: str) -> tuple[str, float] | None:
    """(label, bf16 dense FLOP/s) of the GPU called ``device_name``, or None if it is not in the table."""
    for key, label, tflops in DATASHEET_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return label, tflops * 1e12
    return None


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak."""
    return tokens_per_s * flops_per_token / peak_flops


def shapes(quick: bool):
    """(ModelConfig, micro batch, sequence length) of the 1.8B recipe; ``quick``: 2 layers, 2 × 512 tokens."""
    from qwen_cli.recipe import load_recipe
    from qwen_cli.stages.pretrain import SECTIONS

    recipe = load_recipe(RECIPE, sections=SECTIONS)
    config = recipe.model.to_config(vocab_size=VOCAB)
    batch, seq = recipe.train.micro_batch_size, recipe.data.seq_len
    if quick:
        config, batch, seq = dataclasses.replace(config, num_layers=2, max_position_embeddings=512), 2, 512
    return config, batch, seq


@contextlib.contextmanager
def reference_op(name: str | None) -> Iterator[None]:
    """The decoder's call of op ``name`` forced to its plain-torch reference (the ablation switch)."""
    from qwen_cli.model import decoder

    if name is None:
        yield
        return
    original = getattr(decoder, name)
    setattr(decoder, name, lambda *args: original(*args[:-1], "torch"))
    try:
        yield
    finally:
        setattr(decoder, name, original)


def our_runs(config, batch: int, seq: int, device: torch.device, ablation: str = "full") -> dict[str, Callable[[], None]]:
    """Training steps of one QwenModel under every (ablation, compile) setting; ``ablation = "short"`` keeps
    auto, all fused ops and none (each compile of another setting costs tens of seconds at the 1.8B shapes)."""
    from qwen_cli.kernels.cross_entropy import linear_cross_entropy
    from qwen_cli.model import QwenModel

    torch.manual_seed(0)
    with device:  # initialised where it trains (1.8B parameters take a while on a CPU)
        model = QwenModel(dataclasses.replace(config, kernels="triton")).train()
    layers = {False: model.layers, True: torch.nn.ModuleList(torch.compile(block) for block in model.layers)}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), fused=True)
    ids = torch.randint(0, config.vocab_size, (batch, seq + 1), device=device)

    def step(kernels: str, attention: str, off: str | None, compiled: bool) -> Callable[[], None]:
        def run() -> None:
            model.config.kernels, model.config.attention_backend = kernels, attention
            model.layers = layers[compiled]  # the same blocks (and parameters), compiled or not
            # the loss is not called from the decoder: its ablation is the backend argument below
            with reference_op(off if off in OPS else None), torch.autocast(device.type, dtype=torch.bfloat16):
                hidden = model.hidden_states(ids[:, :-1])
                loss, n = linear_cross_entropy(hidden, model.lm_head.weight, ids[:, 1:],
                                               backend="torch" if off == "cross_entropy" else kernels)
            (loss / n).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return run

    settings = [("auto", "auto", "auto", None),  # what a recipe gets: Triton eager, inductor's own under compile
                ("all fused ops", "triton", "auto", None),
                *[(f"- {op}", "triton", "auto", op) for op in (*OPS, "cross_entropy")],
                ("- flash-attn (sdpa)", "triton", "sdpa", None), ("no fused ops (torch, sdpa)", "torch", "sdpa", None)]
    if ablation == "short":
        settings = [setting for setting in settings if setting[3] is None and setting[2] == "auto" or setting[1] == "torch"]
    # eager: only all vs none (the ablation is about what the compiled trainer runs)
    return {f"ours {label}{' +compile' if compiled else ''}": step(kernels, attention, off, compiled)
            for compiled in (False, True) for label, kernels, attention, off in settings
            if compiled or kernels != "auto" and (off is None and attention == "auto" or kernels == "torch")}


def their_runs(config, batch: int, seq: int, device: torch.device) -> dict[str, Callable[[], None]]:
    """Training steps of transformers' Qwen2ForCausalLM (same config), eager and compiled."""
    import importlib.util

    from transformers import Qwen2Config, Qwen2ForCausalLM

    attn = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    hf_config = Qwen2Config(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                            intermediate_size=config.intermediate_size, num_hidden_layers=config.num_layers,
                            num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
                            max_position_embeddings=seq, rope_theta=config.rope_theta,
                            rms_norm_eps=config.rms_norm_eps, tie_word_embeddings=False, use_cache=False,
                            attn_implementation=attn)
    torch.manual_seed(0)
    with device:
        model = Qwen2ForCausalLM(hf_config).train()
    compiled = torch.compile(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), fused=True)
    ids = torch.randint(0, config.vocab_size, (batch, seq), device=device)

    def step(forward) -> Callable[[], None]:
        def run() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = forward(input_ids=ids, labels=ids).loss  # shifts the labels itself
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return run

    return {f"transformers ({attn})": step(model), f"transformers ({attn}) +compile": step(compiled)}


def table(rows: list[dict], theirs: str) -> str:
    """Markdown table of the runs, with each one's speed relative to ``theirs`` (eager or compiled alike)."""
    lines = ["| run | tokens/s | MFU | vs transformers | step peak GiB |", "|---|---:|---:|---:|---:|"]
    base = {r["compile"]: r["tokens_per_s"] for r in rows if r["run"].startswith(theirs)}
    for r in rows:
        failed = r.get("error")
        if failed:
            lines.append(f"| {r['run']} | failed: {failed} | | | |")
            continue
        ratio = r["tokens_per_s"] / base[r["compile"]] if base.get(r["compile"]) else float("nan")
        mfu_text = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        lines.append(f"| {r['run']} | {r['tokens_per_s']:,.0f} | {mfu_text} | {ratio:.2f}x | "
                     f"{r['peak_gib']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 layers, 2 × 512 tokens (same widths)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds")
    parser.add_argument("--batch", type=int, default=0, help="micro batch (default: the recipe's)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="bf16 dense peak when the GPU is not known")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--ablation", choices=("full", "short"), default="full",
                        help="short: only auto, all fused ops and none compiled (each setting compiles anew)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here (torch.cuda.is_available() is False); run it on a machine with an "
              "NVIDIA GPU", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT / "bench"))
    from interleave import cuda_peak_tracked, interleaved_times

    device = torch.device("cuda")
    torch._dynamo.config.recompile_limit = 64  # every ablation setting is its own compiled graph
    name = torch.cuda.get_device_name(device)
    peak = ("--peak-tflops", args.peak_tflops * 1e12) if args.peak_tflops else datasheet_peak(name)
    config, batch, seq = shapes(args.quick)
    batch = args.batch or batch
    runs = {**our_runs(config, batch, seq, device, args.ablation), **their_runs(config, batch, seq, device)}
    peaks: dict[str, list[float]] = {n: [] for n in runs}
    errors: dict[str, str] = {}
    timed = {}
    for run_name, run in runs.items():  # warm-up (compiles) twice; a run that cannot work is reported
        try:
            run()
            run()
            timed[run_name] = cuda_peak_tracked(run, peaks[run_name])
        except Exception as exc:  # noqa: BLE001 - one failing setting must not hide the others
            errors[run_name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"
    times = interleaved_times(timed, args.repeats)
    from qwen_cli.model import QwenModel

    with torch.device("meta"):
        flops_per_token = QwenModel(config).flops_per_token(seq)
    rows = []
    for run_name in runs:
        row = {"run": run_name, "compile": run_name.endswith("+compile")}
        if run_name in errors:
            rows.append({**row, "error": errors[run_name]})
            continue
        tokens_per_s = batch * seq / statistics.median(times[run_name])
        rows.append({**row, "tokens_per_s": tokens_per_s, "peak_gib": max(peaks[run_name]) / 2**30,
                     "mfu": mfu(tokens_per_s, flops_per_token, peak[1]) if peak else None})
    print(f"{name}: bf16 dense peak {f'{peak[1] / 1e12:.0f} TFLOPS ({peak[0]} datasheet)' if peak else 'unknown'}"
          f" | {config.num_layers} layers, hidden {config.hidden_size}, FFN {config.intermediate_size}, "
          f"vocab {config.vocab_size}, {batch} × {seq} tokens | {flops_per_token / 1e9:.2f} GFLOP/token | "
          f"torch {torch.__version__} | median of {args.repeats} interleaved rounds")
    print(table(rows, "transformers"))
    if not peak:
        print("MFU needs the GPU's peak: pass --peak-tflops (bf16 dense, from its datasheet)")
    if args.json:
        args.json.write_text(json.dumps({"device": name, "quick": args.quick, "peak_flops": peak[1] if peak else None,
                                         "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

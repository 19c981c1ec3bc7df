"""``qwen pretrain RECIPE --plan``: memory per GPU and days of a pretraining run, computed before renting GPUs.

The model is built on the meta device (no weights exist), so parameter counts are exact — they
come from the real module — and a 14B plan takes well under a second. Everything below describes
*this* trainer (``train.trainer``): FSDP2 ``fully_shard`` on every decoder block and on the root
(embedding, final norm, output projection), master weights in fp32, ``train.dtype`` as the
``torch.autocast`` dtype, ``torch.optim.AdamW`` (``train.optim``), the fused output projection +
cross-entropy (``kernels.cross_entropy``). Notation: ``N`` parameters, ``G`` GPUs, ``L`` layers,
``d`` hidden, ``d_kv`` key/value width, ``f`` FFN width, ``h`` heads, ``h_d`` head width, ``V``
vocabulary, ``T`` = micro batch × seq_len tokens per forward, ``c`` = bytes of the autocast dtype
(2 for bf16, 4 for fp32), ``P_b`` / ``M_b`` parameters / matmul weights of one block, ``P_r`` the root's.

Per GPU, in bytes:
  * parameters ``4N/G``, gradients ``4N/G`` (fp32, sharded), AdamW ``8N/G`` (``exp_avg`` and
    ``exp_avg_sq`` in fp32; the parameters are themselves the fp32 master copy, so there is no third);
  * FSDP2 gathered (G > 1): ``4·(P_r + 2·P_b)`` — the root's parameters stay gathered while the loss
    runs, plus the current block and the one prefetched; ``c·(P_r + 2·P_b)`` under FSDP2's
    ``MixedPrecisionPolicy`` (G > 1 and c = 2; ``train.distributed.mixed_precision``), which gathers
    bf16 copies and reduces gradients in fp32;
  * autocast weight copies (c = 2, one GPU): every matmul weight is cast to bf16 in the forward and autograd
    keeps the copy until that layer's backward: ``2·L·M_b`` (not sharded!); with activation
    checkpointing only the recomputed block's ``2·M_b``. None under the mixed-precision policy: the
    weights are already bf16 there, and FSDP2 frees each block's gathered copy after its forward
    (autograd's saved references included) and gathers it again for the backward. The activations and
    the loss are counted as under autocast there too (an upper bound: the residual stream is bf16);
  * activations per layer per token (what autograd saves, counted tensor by tensor and checked
    against ``torch.autograd.graph.saved_tensors_hooks`` in ``tests/test_plan.py``), with the fused
    Triton kernels (``model.kernels`` = auto/triton: what a GPU runs; RMSNorm keeps only its input,
    SwiGLU only gate‖up) ``a = 8d + c·(5d + 3d_kv + 3f) + 4h + 8``, with plain torch
    (``kernels = "torch"``) ``a = 16d + c·(5d + 3d_kv + 4f) + 4h + 8``. Counted: the fp32 residual
    stream (block input, mid residual; plain torch also keeps both norms' fp32 outputs), the qkv and
    MLP inputs, the attention output, the qkv output, q and k as the attention kernel reads them,
    the SwiGLU tensors (gate‖up and the product; plain torch also silu(gate)), the attention
    log-sum-exp and the two RMSNorm scales. A fused (flash/SDPA) attention keeps no T×T scores.
    Without checkpointing ``L·T·a``; with per-block checkpointing ``L·T·4d`` (each block's input)
    ``+ T·a`` (the block being recomputed); selective checkpointing (every second block,
    ``train.activation_checkpointing``) ``k·T·a + (L−k)·T·4d + T·a`` for the k blocks that keep theirs. This plays the role of Korthikanti et al.'s
    ``s·b·h·(34 + 5·a·s/h)`` for our architecture (SwiGLU, fp32 residual stream under autocast, no
    attention matrix);
  * loss, kept until backward: ``T·(8 + 8h_d + 8d + 4)`` (ids, rotary cos/sin, final norm, the
    hidden-state gradient; plain torch ``12d``: the final norm's output too) ``+ 4·V·d`` (the output weight's gradient, computed in the forward), and
    while it runs ``4·k·V`` (one chunk of k tokens of fp32 logits) plus, for c = 2,
    ``4·T·d + 8·V·d + 6·k·V`` (bf16 copies of hidden, its gradient and the weight; the bf16 chunk;
    one chunk's bf16 weight gradient and its fp32 cast).

The peak is taken at the end of the forward pass, when all of these are alive. Not counted: the
CUDA context, NCCL buffers and allocator fragmentation (budget a few GB), and ``train.compile``,
which usually saves fewer tensors than eager mode. The three memory columns are the three
``train.activation_checkpointing`` modes (``train.activation_checkpoint``); the recipe's own is marked.
Below them, per mode, the largest micro batch that fits (one that divides the step into whole micro
steps), and when the recipe's own setting does not fit, the ``--set`` overrides that would.

Time: FLOPs per token are the trainer's MFU numerator (``QwenModel.flops_per_token``: 6·N_matmul +
12·L·d·seq_len); days = steps · batch_tokens · FLOPs per token / (G · peak · MFU) / 86400, with
steps as the trainer counts them (``train.steps``, else ``train.tokens // train.batch_tokens``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from qwen_cli.checkpoint.model_dir import read_config
from qwen_cli.data.encode import read_manifest
from qwen_cli.errors import UserError
from qwen_cli.kernels.cross_entropy import TUNE_CHUNKS
from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.model.config import PRESETS
from qwen_cli.recipe import Recipe
from qwen_cli.train.activation_checkpoint import checkpointed

# memory columns of the plan: its key -> train.activation_checkpointing mode
COLUMNS = {"no_checkpointing": "none", "selective_checkpointing": "selective", "checkpointing": "full"}

_UNITS = {"": 10**9, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_bytes(text: str) -> int:
    """``80GB`` or ``80`` (10⁹ bytes each), ``80GiB`` (2³⁰), ``512MB``…: a byte count; UserError otherwise."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS or float(match.group(1)) <= 0:
        raise UserError(f"--gpu-memory: {text!r} is not a size like 80GB, 80GiB or 80 (GB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


@dataclass(frozen=True)
class Cluster:
    """The hardware a plan is for."""

    gpus: int = 8
    gpu_memory: int = 80 * 10**9  # bytes per GPU
    mfu: float = 0.4
    peak_flops: float = 989e12  # per GPU (H100 SXM dense bf16)


def model_config(recipe: Recipe) -> tuple[ModelConfig, str]:
    """The model the run would train and where its vocabulary size comes from (no weights are read)."""
    if recipe.init.checkpoint:
        return read_config(Path(recipe.init.checkpoint)), f"init.checkpoint {recipe.init.checkpoint}"
    if recipe.model.vocab_size is not None or "vocab_size" in PRESETS.get(recipe.model.preset or "", {}):
        return recipe.model.to_config(), "the recipe"
    shards = recipe.data.shards or (recipe.data.sources[0].shards if recipe.data.sources else "")
    if shards and Path(shards, "manifest.json").is_file():
        vocab = read_manifest(shards)["tokenizer"]["padded_vocab_size"]
        return recipe.model.to_config(vocab_size=vocab), f"the tokenizer of {shards}"
    return recipe.model.to_config(), "the Qwen tokenizer's padded size (shards not encoded yet)"


class _ShapesOnly(TorchFunctionMode):
    """Building on the meta device without its cold-start cost: ``nn.init`` calls return at once (meta
    tensors hold no values) and ``arange`` (the rotary frequencies, a few floats) runs on the CPU. On
    meta both would go through ``torch._refs`` and first import ``torch._dynamo`` (~10 s cold)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", "") == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        if func is torch.arange:
            kwargs = {**kwargs, "device": "cpu"}
        return func(*args, **kwargs)


def meta_model(config: ModelConfig) -> QwenModel:
    """The real module, shapes only: no memory is allocated for its weights."""
    with torch.device("meta"), _ShapesOnly():
        return QwenModel(config)


def _matmul_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


def plan(recipe: Recipe, cluster: Cluster) -> dict:
    """The plan as a JSON-able dict (see the module docstring for every formula)."""
    config, vocab_from = model_config(recipe)
    model = meta_model(config)
    t, g = recipe.train, cluster.gpus
    seq = recipe.data.seq_len
    per_micro = t.micro_batch_size * seq * g
    if t.batch_tokens % per_micro:
        raise UserError(f"{recipe.source}: train.batch_tokens = {t.batch_tokens} is not a multiple of "
                        f"micro_batch_size · seq_len · GPUs = {t.micro_batch_size} · {seq} · {g}")
    steps = t.steps or t.tokens // t.batch_tokens
    if steps <= 0:
        raise UserError(f"{recipe.source}: train.steps (or train.tokens >= train.batch_tokens) must be set")

    n = model.num_parameters()
    blocks = list(model.layers)
    block = max(sum(p.numel() for p in b.parameters()) for b in blocks)
    block_matmul = max(_matmul_weights(b) for b in blocks)
    root = n - sum(p.numel() for b in blocks for p in b.parameters())
    d, dkv, f, h, hd = (config.hidden_size, config.num_kv_heads * config.head_dim, config.intermediate_size,
                        config.num_heads, config.head_dim)
    v, layers = config.vocab_size, config.num_layers
    c = 2 if t.dtype == "bfloat16" else 4
    mixed = g > 1 and c == 2  # FSDP2 MixedPrecisionPolicy (qwen_cli.train.distributed.mixed_precision)
    fused = config.kernels != "torch"
    per_layer = (8 if fused else 16) * d + c * (5 * d + 3 * dkv + (3 if fused else 4) * f) + 4 * h + 8

    def loss_chunk(tokens: int) -> int:
        chunk = min(t.loss_chunk_tokens or max(TUNE_CHUNKS), tokens)  # 0: measured on the GPU, at most this
        return -(-tokens // -(-tokens // chunk))  # the loss kernel's equal chunks

    def memory_per_gpu(micro_batch: int) -> dict:
        """Bytes per GPU under each activation-checkpointing mode at this micro batch size."""
        tokens, chunk = micro_batch * seq, loss_chunk(micro_batch * seq)
        loss = tokens * (8 + 8 * hd + (8 if fused else 12) * d + 4) + 4 * v * d + 4 * chunk * v
        if c == 2:
            loss += 4 * tokens * d + 8 * v * d + 6 * chunk * v
        shared = {
            "parameters": 4 * n // g,
            "gradients": 4 * n // g,
            "optimizer": 8 * n // g,
            "fsdp_gathered": (c if mixed else 4) * (root + 2 * block) if g > 1 else 0,
            "loss": loss,
        }
        memory = {}
        for name, mode in COLUMNS.items():
            kept = sum(not checkpointed(mode, i) for i in range(layers))  # blocks that keep their activations
            recompute = kept < layers  # one checkpointed block's activations and weight copy while it reruns
            copies = 2 * (kept + recompute) * block_matmul
            activations = (kept * tokens * per_layer + (layers - kept) * tokens * 4 * d
                           + recompute * tokens * per_layer)
            parts = {**shared, "weight_copies": copies if c == 2 and not mixed else 0, "activations": activations}
            total = sum(parts.values())
            memory[name] = {**parts, "total": total, "fits": total <= cluster.gpu_memory}
        return memory

    tokens = t.micro_batch_size * seq
    memory = memory_per_gpu(t.micro_batch_size)
    # micro batch sizes the step allows (a whole number of micro steps), and per mode the largest that fits
    sizes = [m for m in range(1, t.batch_tokens // (seq * g) + 1) if t.batch_tokens % (m * seq * g) == 0]
    for name in COLUMNS:
        memory[name]["largest_micro_batch"] = max(
            (m for m in sizes if memory_per_gpu(m)[name]["fits"]), default=None)

    flops_per_token = model.flops_per_token(seq)
    train_tokens = steps * t.batch_tokens
    seconds = train_tokens * flops_per_token / (g * cluster.peak_flops * cluster.mfu)
    return {
        "recipe": recipe.source,
        "model": {"parameters": n, "matmul_parameters": _matmul_weights(model), "layers": layers, "hidden_size": d, "intermediate_size": f,
                  "heads": h, "kv_heads": config.num_kv_heads, "vocab_size": v, "vocab_from": vocab_from,
                  "block_parameters": block, "root_parameters": root},
        "cluster": {"gpus": g, "gpu_memory": cluster.gpu_memory, "mfu": cluster.mfu, "peak_flops": cluster.peak_flops},
        "batch": {"seq_len": seq, "micro_batch_size": t.micro_batch_size, "accum_steps": t.batch_tokens // per_micro,
                  "tokens_per_micro_batch": tokens, "tokens_per_step": t.batch_tokens,
                  "loss_chunk_tokens": loss_chunk(tokens)},
        "compute_dtype": t.dtype,
        "activation_checkpointing": t.activation_checkpointing,
        "fsdp_mixed_precision": mixed,
        "kernels": "triton" if fused else "torch",
        "memory_per_gpu": memory,
        "activation_bytes_per_layer_token": per_layer,
        "flops_per_token": flops_per_token,
        "steps": steps,
        "train_tokens": train_tokens,
        "total_flops": train_tokens * flops_per_token,
        "days": seconds / 86400,
    }


def _gb(x: float) -> str:
    return f"{x / 1e9:,.1f} GB"


def advice(p: dict) -> str | None:
    """When the recipe's own setting does not fit: the ``--set`` overrides that would (else None)."""
    memory, mode = p["memory_per_gpu"], p["activation_checkpointing"]
    if memory[next(key for key, value in COLUMNS.items() if value == mode)]["fits"]:
        return None
    changes = []
    for key, other in sorted(COLUMNS.items(), key=lambda item: item[1] != mode):  # the recipe's mode first
        ac = [] if other == mode else [f"train.activation_checkpointing={other}"]
        micro = [] if memory[key]["fits"] else [f"train.micro_batch_size={memory[key]['largest_micro_batch']}"]
        if memory[key]["largest_micro_batch"] and ac + micro:
            changes.append(" ".join(f"--set {change}" for change in ac + micro))
    where = f"AC {mode} with micro batch {p['batch']['micro_batch_size']} does not fit"
    return f"{where}: {' or '.join(changes)}" if changes else f"{where}, nor does any micro batch: use more GPUs"


def render(p: dict) -> str:
    """The plan as text for the terminal."""
    m, b, cl = p["model"], p["batch"], p["cluster"]
    columns = [p["memory_per_gpu"][key] for key in COLUMNS]
    rows = [
        ("parameters (fp32, sharded)", "parameters"), ("gradients (fp32, sharded)", "gradients"),
        ("AdamW moments (2 × fp32, sharded)", "optimizer"),
        (f"FSDP2 gathered (root + 2 blocks{', bf16' if p['fsdp_mixed_precision'] else ''})", "fsdp_gathered"),
        (f"{p['compute_dtype']} weight copies (autocast)", "weight_copies"),
        ("activations", "activations"), ("loss (fused output + CE)", "loss"),
    ]
    lines = [
        f"plan for {p['recipe']}",
        f"model: {m['parameters']:,} parameters ({m['layers']} layers, hidden {m['hidden_size']}, FFN "
        f"{m['intermediate_size']}, {m['heads']} heads, vocabulary {m['vocab_size']:,} from {m['vocab_from']})",
        f"cluster: {cl['gpus']} GPUs × {_gb(cl['gpu_memory'])}, peak {cl['peak_flops'] / 1e12:g} TFLOP/s, "
        f"MFU {cl['mfu']:g}",
        f"batch: {b['tokens_per_step']:,} tokens per step = {cl['gpus']} GPUs × {b['accum_steps']} micro steps × "
        f"{b['micro_batch_size']} × {b['seq_len']}",
        "",
        f"{'memory per GPU (FSDP2 full sharding)':<40}"
        + "".join(f"{('* ' if mode == p['activation_checkpointing'] else '') + 'AC ' + mode:>14}"
                  for mode in COLUMNS.values()),
    ]
    lines += [f"{label:<40}" + "".join(f"{_gb(m[key]):>14}" for m in columns) for label, key in rows]
    fits = {True: "fits", False: "does not fit"}
    largest = [str(m["largest_micro_batch"] or "none") for m in columns]
    lines += [
        f"{'total (peak, end of forward)':<40}" + "".join(f"{_gb(m['total']):>14}" for m in columns),
        f"{'in ' + _gb(cl['gpu_memory']):<40}" + "".join(f"{fits[m['fits']]:>14}" for m in columns),
        f"{'largest micro batch that fits':<40}" + "".join(f"{size:>14}" for size in largest),
        *([advice(p)] if advice(p) else []),
        f"activations: {p['activation_bytes_per_layer_token']:,} bytes per layer per token ("
        + ("8d + c(5d + 3d_kv + 3f) + 4h + 8, Triton kernels)" if p["kernels"] == "triton"
           else "16d + c(5d + 3d_kv + 4f) + 4h + 8, plain torch)"),
        "",
        f"FLOPs per token: {p['flops_per_token']:.4g} (6·N_matmul + 12·L·d·seq)",
        f"steps: {p['steps']:,} for {p['train_tokens'] / 1e12:.3g}T tokens ({p['total_flops']:.3g} FLOPs)",
        f"time: {p['days']:,.1f} days on {cl['gpus']} GPUs at MFU {cl['mfu']:g}",
    ]
    return "\n".join(lines)

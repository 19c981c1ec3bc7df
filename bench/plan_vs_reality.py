"""``qwen pretrain --plan`` against the memory a real training step allocates, on one GPU.

For the Qwen-1.8B recipe (``--quick``: 4 of its 24 layers, micro batch 2) with each activation
checkpointing mode the plan models (``none``, ``selective``, ``full``), the plan's peak for one GPU is
compared with ``torch.cuda.max_memory_allocated`` over a training step as ``qwen pretrain`` runs it:
fp32 master weights, bf16 autocast, ``stages.losses.causal_lm_loss`` (the fused output + cross-entropy),
blocks wrapped by ``train.activation_checkpoint``, AdamW. The step measured is the second one, so the
optimizer's moments exist, as they do for the rest of a run. Eager (no ``torch.compile``), as the
plan counts. The allocator's own overhead and the CUDA context are not in either number.

    python bench/plan_vs_reality.py [--quick] [--json out.json]

Without CUDA it prints one line saying so and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "qwen-1.8b" / "pretrain.toml"
PLAN_KEYS = {"none": "no_checkpointing", "selective": "selective_checkpointing", "full": "checkpointing"}


def recipe_for(quick: bool, mode: str):
    from qwen_cli.recipe import load_recipe
    from qwen_cli.stages.pretrain import SECTIONS

    sets = ["model.vocab_size=151936", f'train.activation_checkpointing="{mode}"', "train.steps=1",
            'data.shards="unused"']
    if quick:
        sets += ["model.num_layers=4", "train.micro_batch_size=2", "train.batch_tokens=4096"]
    else:
        sets += ["train.batch_tokens=16384"]
    return load_recipe(RECIPE, sets, sections=SECTIONS)


def measure(recipe, device: torch.device) -> int:
    """Peak bytes allocated during the second training step of ``recipe``'s model (all of it: weights too)."""
    from qwen_cli.model import QwenModel
    from qwen_cli.stages.losses import causal_lm_loss
    from qwen_cli.stages.plan import model_config
    from qwen_cli.train.activation_checkpoint import apply_activation_checkpointing

    torch.manual_seed(0)
    with device:  # initialised on the GPU: seconds, where 1.8B parameters on the CPU take a while
        model = QwenModel(model_config(recipe)[0])
    apply_activation_checkpointing(model, list(model.layers), recipe.train.activation_checkpointing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), fused=device.type == "cuda")
    t = recipe.train
    ids = torch.randint(0, model.config.vocab_size, (t.micro_batch_size, recipe.data.seq_len), device=device)
    for step in range(2):
        if step == 1:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss, n, _ = causal_lm_loss(model, {"input_ids": ids, "labels": ids}, t.loss_chunk_tokens)
        (loss / n).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # the plan counts the gradients as resident
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del model, optimizer
    torch.cuda.empty_cache()
    return peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 layers, micro batch 2")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("plan_vs_reality: no CUDA device here (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    from qwen_cli.stages.plan import Cluster, plan

    device = torch.device("cuda")
    rows = []
    for mode, key in PLAN_KEYS.items():
        recipe = recipe_for(args.quick, mode)
        planned = plan(recipe, Cluster(gpus=1, gpu_memory=torch.cuda.get_device_properties(device).total_memory))
        measured = measure(recipe, device)
        total = planned["memory_per_gpu"][key]["total"]
        shape = f"{planned['model']['layers']} layers, {recipe.train.micro_batch_size} x {recipe.data.seq_len}"
        rows.append({"ac": mode, "shape": shape, "plan_gib": total / 2**30, "measured_gib": measured / 2**30})
        print(f"AC {mode:9s} {shape}: plan {total / 2**30:6.2f} GiB, max_memory_allocated {measured / 2**30:6.2f} GiB "
              f"({100 * (total / measured - 1):+.1f}%)", flush=True)
        if args.json:
            args.json.write_text(json.dumps({"device": torch.cuda.get_device_name(device), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

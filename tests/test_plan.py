"""`qwen pretrain --plan`: checked against a hand calculation, against the tensors autograd really saves,
and for the 14B recipe without allocating it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch
from train_fixtures import ROOT, TINY_OVERRIDES, TINY_RECIPE

from qwen_cli.model import QwenModel
from qwen_cli.recipe import load_recipe
from qwen_cli.stages.losses import causal_lm_loss
from qwen_cli.stages.plan import Cluster, meta_model, model_config, plan
from qwen_cli.stages.pretrain import SECTIONS

D, LAYERS, HEADS, FFN, VOCAB, SEQ, MICRO, CHUNK = 64, 2, 4, 176, 512, 32, 2, 16
GPUS, STEPS = 4, 20
SMALL = (*TINY_OVERRIDES, 'data.shards="unused"', f"model.hidden_size={D}", f"model.num_layers={LAYERS}",
         f"model.num_heads={HEADS}", f"model.intermediate_size={FFN}", f"model.vocab_size={VOCAB}",
         f"data.seq_len={SEQ}", f"train.micro_batch_size={MICRO}", f"train.batch_tokens={MICRO * SEQ * GPUS * 2}",
         "train.steps=0", f"train.tokens={STEPS * MICRO * SEQ * GPUS * 2 + 100}", f"train.loss_chunk_tokens={CHUNK}",
         "train.dtype=bfloat16")
CLUSTER = Cluster(gpus=GPUS, gpu_memory=1_900_000, mfu=0.5, peak_flops=1e12)


def small_recipe(kernels: str = "torch"):
    return load_recipe(TINY_RECIPE, (*SMALL, f'model.kernels="{kernels}"'), sections=SECTIONS)


def test_plan_matches_a_hand_calculation():
    p = plan(small_recipe(), CLUSTER)
    d, f, v, hd, t = D, FFN, VOCAB, D // HEADS, MICRO * SEQ
    block = (d * 3 * d + 3 * d) + d * d + d * 2 * f + f * d + 2 * d  # qkv (+bias), o, gate‖up, down, 2 norms
    block_matmul = 3 * d * d + d * d + 3 * f * d
    root = v * d + d + v * d  # embedding, final norm, output (untied)
    n = LAYERS * block + root
    assert p["model"]["parameters"] == n == 166_592
    assert p["batch"]["accum_steps"] == 2 and p["steps"] == STEPS and p["batch"]["tokens_per_step"] == 512
    per_layer = 16 * d + 2 * (5 * d + 3 * d + 4 * f) + 4 * HEADS + 8  # plain torch, bf16: c = 2, d_kv = d
    assert p["activation_bytes_per_layer_token"] == per_layer == 3480 and p["kernels"] == "torch"
    loss = t * (8 + 8 * hd + 12 * d + 4) + 4 * v * d + 4 * CHUNK * v + 4 * t * d + 8 * v * d + 6 * CHUNK * v
    # 4 GPUs in bf16: FSDP2's mixed-precision policy gathers bf16 copies, so no autocast copies are kept
    common = {"parameters": 4 * n // GPUS, "gradients": 4 * n // GPUS, "optimizer": 8 * n // GPUS,
              "fsdp_gathered": 2 * (root + 2 * block), "loss": loss, "weight_copies": 0}
    expected = {
        "no_checkpointing": {**common, "activations": LAYERS * t * per_layer},
        # block 1 of 2 checkpointed: block 0's activations, block 1's input, block 1 while it is recomputed
        "selective_checkpointing": {**common, "activations": t * per_layer + t * 4 * d + t * per_layer},
        "checkpointing": {**common, "activations": LAYERS * t * 4 * d + t * per_layer},
    }
    for name, parts in expected.items():
        got = p["memory_per_gpu"][name]
        assert {k: got[k] for k in parts} == parts
        assert got["total"] == sum(parts.values())
    assert p["fsdp_mixed_precision"] and p["activation_checkpointing"] == "none"
    assert p["memory_per_gpu"]["no_checkpointing"]["total"] == 1_994_624  # > 1.9 MB: does not fit
    assert p["memory_per_gpu"]["checkpointing"]["total"] == 1_804_672
    assert [p["memory_per_gpu"][k]["fits"] for k in expected] == [False, False, True]
    # one GPU: no FSDP, autocast keeps a bf16 copy of every matmul weight (only the recomputed block's
    # under full checkpointing, the kept block's and the recomputed one's under selective)
    one = plan(small_recipe(), Cluster(gpus=1, gpu_memory=1_900_000, mfu=0.5, peak_flops=1e12))
    assert not one["fsdp_mixed_precision"]
    assert [one["memory_per_gpu"][k]["weight_copies"] for k in expected] == \
        [2 * LAYERS * block_matmul, 2 * 2 * block_matmul, 2 * block_matmul]
    assert {one["memory_per_gpu"][k]["fsdp_gathered"] for k in expected} == {0}
    flops = 6 * (n - v * d) + 12 * LAYERS * d * SEQ  # the embedding lookup is no matmul
    assert p["flops_per_token"] == flops
    assert p["days"] == pytest.approx(STEPS * 512 * flops / (GPUS * 1e12 * 0.5) / 86400)


def saved_for_backward(recipe) -> int:
    """Bytes of every tensor a real forward keeps for backward (storage counted once, parameters excluded)."""
    model = QwenModel(model_config(recipe)[0])
    params = {q.untyped_storage().data_ptr() for q in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    ids = torch.randint(0, VOCAB, (MICRO, SEQ))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x), torch.autocast("cpu", dtype=torch.bfloat16):
        causal_lm_loss(model, {"input_ids": ids, "labels": ids}, CHUNK)
    return sum(saved.values())


def planned_saved(recipe, final_norm_width: int) -> int:
    """The plan's weight copies + activations + the loss's saved part (ids, cos/sin, final norm, gradients)."""
    p = plan(recipe, Cluster(gpus=1))["memory_per_gpu"]["no_checkpointing"]  # autocast, as measured here
    t, d, hd = MICRO * SEQ, D, D // HEADS
    return p["weight_copies"] + p["activations"] + t * (8 + 8 * hd + final_norm_width * d + 4) + 4 * VOCAB * d


def test_activation_formula_is_what_autograd_saves_plain_torch(one_thread):
    recipe = small_recipe("torch")
    assert saved_for_backward(recipe) == planned_saved(recipe, 12)


@pytest.mark.slow
def test_activation_formula_is_what_autograd_saves_triton_kernels():
    """The fused kernels' path, run by Triton's CPU interpreter in a fresh process (the interpreter must be
    chosen before Triton is imported): what a GPU with ``kernels = auto`` saves."""
    pytest.importorskip("triton")
    recipe = small_recipe("triton")
    assert plan(recipe, CLUSTER)["activation_bytes_per_layer_token"] == 8 * D + 2 * (8 * D + 3 * FFN) + 4 * HEADS + 8
    script = ("import sys, torch; sys.path.insert(0, 'tests'); torch.set_num_threads(1)\n"
              "from test_plan import saved_for_backward, small_recipe\n"
              "print(saved_for_backward(small_recipe('triton')))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TRITON_INTERPRET": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) == planned_saved(recipe, 8)


def test_the_14b_plan_allocates_nothing_and_takes_under_two_seconds():
    recipe = load_recipe(ROOT / "recipes" / "qwen-14b" / "pretrain.toml", sections=SECTIONS)
    start = time.perf_counter()
    p = plan(recipe, Cluster(gpus=64))
    assert time.perf_counter() - start < 2.0
    assert p["model"]["parameters"] == 14_167_290_880  # the recipe's own comment
    assert p["steps"] == 3_000_000_000_000 // 4_194_304 and p["batch"]["accum_steps"] == 16
    assert all(q.is_meta for q in meta_model(model_config(recipe)[0]).parameters())


@pytest.mark.slow
def test_plan_command_json_and_low_memory():
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the forking parent (pytest, which
    # may hold GBs after other slow tests) across exec, while VmHWM belongs to this process's own memory map.
    script = ("import re, sys\nfrom qwen_cli.cli import main\n"
              "sys.argv = ['qwen', 'pretrain', 'recipes/qwen-14b/pretrain.toml', '--plan', '--json', '--gpus', '16']\n"
              "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
              "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
              "print(hwm, code, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    max_rss_kb, code = done.stderr.split()[-2:]
    assert code in ("0", "None"), done.stderr
    assert int(max_rss_kb) < 1_500_000  # the interpreter and torch; the fp32 model would be 57 GB
    result = json.loads(done.stdout)
    assert result["model"]["parameters"] == 14_167_290_880 and result["cluster"]["gpus"] == 16


def test_plan_errors_are_one_line(run_qwen):
    recipe = ROOT / "recipes" / "qwen-14b" / "pretrain.toml"
    code, _, err = run_qwen("pretrain", recipe, "--plan", "--gpus", "3")
    assert code == 2 and "not a multiple of micro_batch_size · seq_len · GPUs = 2 · 2048 · 3" in err
    code, _, err = run_qwen("pretrain", recipe, "--plan", "--gpu-memory", "lots")
    assert code == 2 and "--gpu-memory: 'lots'" in err
    code, out, _ = run_qwen("pretrain", recipe, "--plan", "--gpus", "16", "--gpu-memory", "141")
    assert code == 0 and "16 GPUs × 141.0 GB" in out and "days on 16 GPUs" in out


def test_readme_plan_table_is_what_the_plan_computes():
    """The plan table in docs/many-gpus.md, row by row (it goes stale when a formula changes)."""
    rows = [line.split("|")[1:-1] for line in (ROOT / "docs" / "many-gpus.md").read_text().splitlines()
            if line.startswith("| qwen-") and "GB" in line]
    assert len(rows) == 7
    for name, gpus, micro, no_ckpt, ckpt, steps, days in rows:
        micro = micro.split()[0]
        recipe = load_recipe(ROOT / "recipes" / name.strip() / "pretrain.toml", [f"train.micro_batch_size={micro}"],
                             sections=SECTIONS)
        p = plan(recipe, Cluster(gpus=int(gpus)))
        memory = p["memory_per_gpu"]
        for cell, key in ((no_ckpt, "no_checkpointing"), (ckpt, "checkpointing")):
            shown = f"{memory[key]['total'] / 1e9:.1f} GB" + ("" if memory[key]["fits"] else " ✗")
            assert cell.strip() == shown, (name, gpus, key)
        assert steps.strip() == f"{p['steps']:,}" and days.strip() == f"{p['days']:.1f}"


@pytest.mark.timeout(60)
def test_plan_names_the_largest_micro_batch_that_fits_and_what_to_set():
    """qwen-7b on 8 × 40 GB: its micro batch 4 fits only with full checkpointing, and the plan says so."""
    from qwen_cli.stages.plan import COLUMNS, advice, render

    recipe = load_recipe(ROOT / "recipes" / "qwen-7b" / "pretrain.toml", sections=SECTIONS)
    cluster = Cluster(gpus=8, gpu_memory=40 * 10**9)
    p = plan(recipe, cluster)
    memory = p["memory_per_gpu"]
    assert p["activation_checkpointing"] == "none" and p["batch"]["micro_batch_size"] == 4
    assert [memory[key]["largest_micro_batch"] for key in COLUMNS] == [None, 1, 4]
    per_micro = recipe.data.seq_len * cluster.gpus
    allowed = [m for m in range(1, 65) if recipe.train.batch_tokens % (m * per_micro) == 0]
    for key, mode in COLUMNS.items():  # the largest that fits does, and the next allowed size does not
        largest = memory[key]["largest_micro_batch"] or 0
        following = min(m for m in allowed if m > largest)
        for micro, fits in ((largest, True), (following, False)):
            if micro:
                other = load_recipe(recipe.source, [f"train.micro_batch_size={micro}"], sections=SECTIONS)
                assert plan(other, cluster)["memory_per_gpu"][key]["fits"] == fits, (mode, micro)
    assert advice(p) == ("AC none with micro batch 4 does not fit: --set train.activation_checkpointing=selective "
                         "--set train.micro_batch_size=1 or --set train.activation_checkpointing=full")
    assert advice(p) in render(p).splitlines()
    assert re.search(r"^largest micro batch that fits +none +1 +4$", render(p), re.M)
    selective = load_recipe(recipe.source, ['train.activation_checkpointing="selective"'], sections=SECTIONS)
    assert advice(plan(selective, cluster)) == ("AC selective with micro batch 4 does not fit: --set "
                                                "train.micro_batch_size=1 or --set train.activation_checkpointing=full")
    assert advice(plan(recipe, Cluster(gpus=8))) is None  # micro batch 4 without checkpointing fits in 80 GB

"""The GPU kernels: Triton's CPU-interpreter tests (in their own process), how a backend is chosen, and
flash-attn's varlen path (its ``cu_seqlens`` and window on CPU; the kernel itself where it is installed),
and the GPU benchmark's parts that need no GPU (peak lookup, MFU, shapes, its runs on a tiny CPU model).

``tests/triton_kernel_cases.py`` compares every kernel with its plain-torch reference under
``TRITON_INTERPRET=1``, which must be set before Triton is imported; in this process ``torch._dynamo``
and transformers may already have imported it, so the cases run in a child pytest (about 15 s on
a quiet core; the slow tier adds the 1.8B widths) and the variable never reaches the other tests.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qwen_cli.errors import UserError
from qwen_cli.kernels import dispatch
from qwen_cli.kernels.attention import attention, band_mask, cu_seqlens, eager_attention, flash_window
from qwen_cli.model import ModelConfig
from qwen_cli.model.config import ConfigError
from qwen_cli.model.masks import build_mask
from qwen_cli.recipe import build_recipe

CASES = Path(__file__).with_name("triton_kernel_cases.py")
BENCH = Path(__file__).resolve().parent.parent / "bench"
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="triton is not installed (pip install -e '.[dev]')")


def _run_cases(marker: str) -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", str(CASES), "-q", "-p", "no:cacheprovider",
                           "-m", marker], cwd=CASES.parent.parent, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


@needs_triton
def test_triton_kernels_match_their_references_in_the_interpreter():
    _run_cases("not slow")


@needs_triton
@pytest.mark.slow
def test_slow_triton_kernel_cases():
    _run_cases("slow")


def test_auto_picks_torch_on_cpu_and_triton_needs_cuda_or_the_interpreter(monkeypatch):
    cpu = torch.zeros(1)
    assert not dispatch.use_triton("auto", cpu) and not dispatch.use_triton("torch", cpu)
    monkeypatch.setattr(dispatch, "TRITON_INSTALLED", True)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert dispatch.use_triton("triton", cpu)
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(UserError, match="model.kernels = 'triton' needs a CUDA device"):
        dispatch.use_triton("triton", cpu)
    monkeypatch.setattr(dispatch, "TRITON_INSTALLED", False)
    with pytest.raises(UserError, match="needs the triton package"):
        dispatch.use_triton("triton", cpu)


def test_loss_chunk_off_cuda_is_sized_from_the_vocabulary():
    """Only CUDA measures its chunk (tests/test_gpu_cuda.py); elsewhere it comes from the vocabulary."""
    from qwen_cli.kernels.cross_entropy import auto_chunk, tuned_chunk

    hidden, weight, labels = torch.zeros(5000, 8), torch.zeros(1000, 8), torch.zeros(5000, dtype=torch.long)
    assert tuned_chunk(5000, hidden, weight, labels, False, True, True) == auto_chunk(1000) == (1 << 28) // 4000


def test_auto_leaves_compiled_code_to_inductor(monkeypatch):
    """``auto`` on a CUDA tensor: Triton eager, the reference while torch.compile traces (inductor fuses it)."""
    class Cuda:
        is_cuda = True

    monkeypatch.setattr(dispatch, "TRITON_INSTALLED", True)
    assert dispatch.use_triton("auto", Cuda())
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not dispatch.use_triton("auto", Cuda())
    assert dispatch.use_triton("triton", Cuda())  # an explicit choice stays


def test_the_kernels_key_is_checked_in_configs_and_recipes():
    assert ModelConfig(kernels="torch").kernels == "torch"
    with pytest.raises(ConfigError, match="kernels must be one of auto, triton, torch, got 'cuda'"):
        ModelConfig(kernels="cuda")
    recipe = build_recipe({"model": {"hidden_size": 32, "num_heads": 4, "kernels": "torch"}}, "r.toml")
    assert recipe.model.to_config(vocab_size=11).kernels == "torch"
    with pytest.raises(UserError, match="model.kernels"):
        build_recipe({"model": {"kernels": "cuda"}}, "r.toml")


SEGMENTS = torch.tensor([[0, 0, 1, 1, 1, 2, 2], [5, 5, 5, 5, 0, 0, 3]])


def test_cu_seqlens_are_the_segment_boundaries_of_the_flattened_rows():
    offsets, longest = cu_seqlens(SEGMENTS)
    assert offsets.dtype == torch.int32 and offsets.tolist() == [0, 2, 5, 7, 11, 13, 14] and longest == 4
    same_id_across_rows = torch.tensor([[1, 1], [1, 1]])
    assert cu_seqlens(same_id_across_rows)[0].tolist() == [0, 2, 4]


@pytest.mark.parametrize("window", [0, 2])
def test_attention_per_cu_seqlens_segment_equals_the_packed_mask(window):
    """What flash-attn's varlen kernel computes (causal attention inside each [offset, next offset) run of
    the flattened tokens, windowed by ``flash_window``'s rule), emulated in eager, equals the decoder's
    segment mask: the boundaries and window mapping are right."""
    b, t = SEGMENTS.shape
    q, k, v = (torch.randn(b, heads, t, 8, generator=torch.Generator().manual_seed(i)) for i, heads in
               enumerate((4, 2, 2)))
    mask = build_mask(t, 0, None, SEGMENTS, q.device)
    if window:
        mask = mask & band_mask(t, t, window, q.device)
    expected = eager_attention(q, k, v, mask=mask)

    def tokens(x):
        return x.transpose(1, 2).reshape(b * t, x.shape[1], 8)

    left, right = flash_window(window)
    assert right in (0, -1)  # no key after the query beyond causality
    offsets, _ = cu_seqlens(SEGMENTS)
    out = torch.empty_like(tokens(q))
    for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
        i, j = torch.arange(end - start)[:, None], torch.arange(end - start)[None, :]
        visible = (j <= i) & (j >= i - left if left >= 0 else True)  # causal=True; -1 = unbounded
        seg = [tokens(x)[start:end].transpose(0, 1)[None] for x in (q, k, v)]
        out[start:end] = eager_attention(*seg, mask=visible[None, None])[0].transpose(0, 1)
    torch.testing.assert_close(out.view(b, t, 4, 8).transpose(1, 2), expected)


needs_flash = pytest.mark.skipif(
    importlib.util.find_spec("flash_attn") is None or not torch.cuda.is_available(),
    reason="flash-attn is not installed or there is no CUDA device (pip install 'qwen-cli[gpu]' on a GPU)")


@needs_flash
@pytest.mark.parametrize("window", [0, 3])
def test_flash_attention_matches_eager(window):
    """Packed segments (varlen) and plain causal attention, bf16 on CUDA, against the fp32 reference."""
    b, t = SEGMENTS.shape
    q, k, v = (torch.randn(b, heads, t, 64, device="cuda", dtype=torch.bfloat16) for heads in (4, 2, 2))
    mask = build_mask(t, 0, None, SEGMENTS.cuda(), "cuda")
    if window:
        mask = mask & band_mask(t, t, window, "cuda")
    packed = attention(q, k, v, mask=mask, causal=False, window=window, segments=SEGMENTS.cuda(), backend="flash")
    torch.testing.assert_close(packed, eager_attention(q, k, v, mask=mask), atol=2e-2, rtol=2e-2)
    plain = attention(q, k, v, window=window, backend="flash")
    expected = eager_attention(q, k, v, mask=band_mask(t, t, window, "cuda") if window else None)
    torch.testing.assert_close(plain, expected, atol=2e-2, rtol=2e-2)


@pytest.fixture()
def bench_gpu(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name,label,tflops", [("NVIDIA H100 80GB HBM3", "H100 SXM", 989),
                                               ("NVIDIA H100 PCIe", "H100 PCIe", 756), ("NVIDIA H200", "H200", 989),
                                               ("NVIDIA A100-SXM4-80GB", "A100", 312), ("NVIDIA L40S", "L40S", 362)])
def test_datasheet_peak_by_device_name(bench_gpu, name, label, tflops):
    assert bench_gpu.datasheet_peak(name) == (label, tflops * 1e12)


def test_unknown_gpus_have_no_peak_and_mfu_is_achieved_over_peak(bench_gpu):
    assert bench_gpu.datasheet_peak("Tesla K80") is None
    # 1.8B shapes: 6·N_matmul + 12·L·H·T FLOPs per token; 10k tokens/s on a 989 TFLOPS GPU
    config, batch, seq = bench_gpu.shapes(quick=False)
    assert (config.hidden_size, config.num_layers, config.num_heads, config.intermediate_size,
            config.vocab_size, batch, seq) == (2048, 24, 16, 5504, 151936, 8, 2048)
    with torch.device("meta"):
        from qwen_cli.model import QwenModel

        per_token = QwenModel(config).flops_per_token(seq)
    n_matmul = 1_836_828_672 - 151936 * 2048
    assert per_token == 6 * n_matmul + 12 * 24 * 2048 * 2048
    assert bench_gpu.mfu(10_000, per_token, 989e12) == pytest.approx(10_000 * per_token / 989e12)
    assert 0.1 < bench_gpu.mfu(10_000, per_token, 989e12) < 0.12
    quick, batch, seq = bench_gpu.shapes(quick=True)
    assert (quick.num_layers, quick.hidden_size, quick.vocab_size, batch, seq) == (2, 2048, 151936, 2, 512)


def test_bench_gpu_says_one_line_without_cuda(bench_gpu, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert bench_gpu.main(["--quick"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.strip().splitlines()) == 1 and "no CUDA device" in out.err


@pytest.mark.slow
def test_bench_runs_train_a_tiny_model_on_cpu(bench_gpu):
    """The benchmark's step closures (reference-op switch, loss, optimizer) on a tiny CPU model."""
    config = ModelConfig(vocab_size=50, hidden_size=32, num_layers=1, num_heads=4, intermediate_size=40,
                         max_position_embeddings=16)
    device = torch.device("cpu")
    ours = bench_gpu.our_runs(config, 2, 8, device)
    ablation = ["auto", "all fused ops", *(f"- {op}" for op in (*bench_gpu.OPS, "cross_entropy")),
                "- flash-attn (sdpa)", "no fused ops (torch, sdpa)"]
    assert list(ours) == ["ours all fused ops", "ours no fused ops (torch, sdpa)",
                          *(f"ours {label} +compile" for label in ablation)]
    assert list(bench_gpu.our_runs(config, 2, 8, device, "short")) == [
        "ours all fused ops", "ours no fused ops (torch, sdpa)", "ours auto +compile", "ours all fused ops +compile",
        "ours no fused ops (torch, sdpa) +compile"]
    theirs = bench_gpu.their_runs(dataclasses.replace(config, num_kv_heads=4), 2, 8, device)
    from qwen_cli.model import decoder

    original = decoder.rms_norm
    with bench_gpu.reference_op("rms_norm"):
        assert decoder.rms_norm is not original
    assert decoder.rms_norm is original
    for run in (ours["ours no fused ops (torch, sdpa)"], next(iter(theirs.values()))):
        run()  # forward, backward and optimizer step; a broken closure raises here
    # the loss's ablation row (it crashed once: the loss is no decoder op): its decoder ops forced to torch
    # here, as a CPU without the interpreter cannot run Triton; the loss goes to torch by its argument
    originals = {op: getattr(decoder, op) for op in bench_gpu.OPS}
    try:
        for op, fn in originals.items():
            setattr(decoder, op, lambda *args, fn=fn: fn(*args[:-1], "torch"))
        ours["ours - cross_entropy +compile"]()
    finally:
        for op, fn in originals.items():
            setattr(decoder, op, fn)


def test_every_ablation_target_exists_in_the_decoder(bench_gpu):
    """A renamed fused op fails here, not halfway through a GPU run (the old `cross_entropy` row crashed)."""
    from qwen_cli.model import decoder

    assert bench_gpu.OPS
    for name in bench_gpu.OPS:
        with bench_gpu.reference_op(name):
            assert callable(getattr(decoder, name))

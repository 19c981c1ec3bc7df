"""Triton kernels against their plain-torch references, on CPU through Triton's interpreter.

Run by ``tests/test_kernels_triton.py`` in a child pytest with ``TRITON_INTERPRET=1`` set before
Triton is imported (Triton fixes interpreted vs compiled when it and each kernel are imported; in the
main test process ``torch._dynamo`` and transformers import it first), so no other test sees it.
Each op: forward and gradients in fp32 and fp16 on odd shapes (widths not powers of two, row counts
that leave a partial block/program). Tolerances: fp32 atol = rtol = 1e-5 (same maths, other summation
order); fp16 atol = rtol = 1e-2, i.e. a few fp16 ulps at the tested magnitudes (the kernels round
once from fp32, the references after each op).
"""

from __future__ import annotations

import os
import sys

DEVICE = os.environ.get("QWEN_KERNEL_TEST_DEVICE", "cpu")  # "cuda": compiled kernels (scripts/gpu_check.sh)
if DEVICE == "cpu":
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("triton was imported before TRITON_INTERPRET=1: run this file through "
                           "tests/test_kernels_triton.py (its own process)")
    os.environ["TRITON_INTERPRET"] = "1"

import dataclasses  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

from qwen_cli.kernels.cross_entropy import linear_cross_entropy, reference_linear_cross_entropy  # noqa: E402
from qwen_cli.kernels.rms_norm import rms_norm, rms_norm_reference  # noqa: E402
from qwen_cli.kernels.rope import apply_rotary, rotary  # noqa: E402
from qwen_cli.kernels.swiglu import swiglu, swiglu_reference  # noqa: E402
from qwen_cli.model import ModelConfig, QwenModel  # noqa: E402
from qwen_cli.model.rope import rope_theta_for, rotary_cos_sin, rotary_inv_freq  # noqa: E402

TOLERANCE = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float16: dict(atol=1e-2, rtol=1e-2)}
if DEVICE == "cuda":  # compiled: tl.dot and cuBLAS use TF32 for fp32 matmuls, other summation orders
    TOLERANCE[torch.float32] = dict(atol=2e-3, rtol=2e-3)
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])


def _grads(fn, inputs, dy):
    """(output, gradients of ``(output · dy).sum()`` w.r.t. ``inputs``)."""
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*inputs)
    (out.float() * dy).sum().backward()
    return out.detach(), [t.grad for t in inputs]


def _assert_close(actual, expected, dtype):
    torch.testing.assert_close(actual.float(), expected.float(), **TOLERANCE[dtype])


def _check(fast, reference, inputs, dtype, out_shape):
    dy = torch.randn(out_shape, generator=torch.Generator().manual_seed(7)).to(DEVICE)
    out, grads = _grads(fast, inputs, dy)
    ref_out, ref_grads = _grads(reference, inputs, dy)
    assert out.dtype == ref_out.dtype and out.shape == ref_out.shape
    _assert_close(out, ref_out, dtype)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        assert grad.dtype == ref_grad.dtype
        _assert_close(grad, ref_grad, dtype)


def _randn(*shape, dtype=torch.float32, seed=0, scale=1.0):
    return (scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))).to(DEVICE, dtype)


@DTYPES
def test_rms_norm_matches_reference(dtype):
    """14 rows of width 300: a partial column block forward, rows left over per program backward."""
    x, weight = _randn(2, 7, 300, dtype=dtype), 1 + _randn(300, seed=1, scale=0.1)
    _check(lambda x, w: rms_norm(x, w, 1e-6, "triton"), lambda x, w: rms_norm_reference(x, w, 1e-6),
           [x, weight], dtype, (2, 7, 300))


def test_rms_norm_with_a_gain_in_the_activation_dtype():
    """A bf16 model (gain and activations alike) gets a bf16 result, as from the reference."""
    x, weight = _randn(5, 96, dtype=torch.bfloat16), (1 + _randn(96, seed=1, scale=0.1)).bfloat16()
    out = rms_norm(x, weight, 1e-6, "triton")
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), rms_norm_reference(x, weight, 1e-6).float(), atol=2e-2, rtol=2e-2)


@DTYPES
def test_swiglu_matches_reference(dtype):
    """I = 1100: one full and one partial block of 1024 columns per row."""
    gate_up = _randn(3, 5, 2 * 1100, dtype=dtype)
    _check(lambda g: swiglu(g, "triton"), swiglu_reference, [gate_up], dtype, (3, 5, 1100))


@DTYPES
def test_rotary_matches_reference_with_the_dynamic_ntk_base(dtype):
    """Positions past the trained length with the bucketed NTK base; a [B, H, T, D] view of a fused
    projection (as the decoder passes it); head dimension 24 (half 12, not a power of two)."""
    b, t, heads, dim, trained = 2, 5, 3, 24, 2048
    theta = rope_theta_for(10000.0, dim, "dynamic", 3 * trained, trained)
    assert theta > 10000.0
    positions = torch.arange(3 * trained - t, 3 * trained, device=DEVICE).expand(b, t)
    cos, sin = rotary_cos_sin(positions, rotary_inv_freq(dim, theta).to(DEVICE), dtype)
    fused = _randn(b, t, heads * dim + 8, dtype=dtype)
    x = fused[..., : heads * dim].view(b, t, heads, dim).transpose(1, 2)
    _check(lambda x: rotary(x, cos, sin, "triton"), lambda x: apply_rotary(x, cos, sin), [x], dtype,
           (b, heads, t, dim))


@DTYPES
def test_linear_cross_entropy_matches_reference(dtype):
    """29 tokens in chunks of 8 (the last one short), vocabulary 32771 (two column blocks of the kernel's
    32768, the second nearly empty), three ignored labels; the torch path (which zeroes ignored rows
    without a device sync) is checked alongside."""
    vocab = 32771
    hidden, weight = _randn(29, 48, dtype=dtype), _randn(vocab, 48, dtype=dtype, seed=1, scale=0.3)
    labels = torch.randint(0, vocab, (29,), generator=torch.Generator().manual_seed(2)).to(DEVICE)
    labels[0] = vocab - 1  # a target in the last, partial block
    labels[[2, 5, 17]] = -100

    def run(fn):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        loss, n = fn(h, w)
        (loss / n).backward()
        return loss.detach(), n, h.grad, w.grad

    expected = run(lambda h, w: reference_linear_cross_entropy(h, w, labels))
    for backend in ("triton", "torch"):
        loss, n, grad_h, grad_w = run(lambda h, w, b=backend: linear_cross_entropy(h, w, labels, 8, backend=b))
        assert n == expected[1] == 26
        _assert_close(loss, expected[0], torch.float32)  # summed in fp32 on both sides
        _assert_close(grad_h, expected[2], dtype)
        _assert_close(grad_w, expected[3], dtype)
    with torch.no_grad():  # evaluation: the kernel's loss-only path
        _assert_close(linear_cross_entropy(hidden, weight, labels, 8, backend="triton")[0], expected[0],
                      torch.float32)


def test_decoder_with_triton_kernels_matches_torch():
    """The whole model, kernels = "triton" vs "torch", same weights: logits and every parameter's gradient."""
    config = ModelConfig(vocab_size=61, hidden_size=48, num_layers=1, num_heads=4, num_kv_heads=2,
                         intermediate_size=88, max_position_embeddings=32)
    ids = torch.randint(0, 61, (2, 7), generator=torch.Generator().manual_seed(3)).to(DEVICE)
    results = []
    for kernels in ("triton", "torch"):
        torch.manual_seed(0)
        model = QwenModel(dataclasses.replace(config, kernels=kernels)).to(DEVICE)
        logits = model(ids)
        logits.square().mean().backward()
        results.append((logits.detach(), {name: p.grad for name, p in model.named_parameters()}))
    (fast, fast_grads), (ref, ref_grads) = results
    torch.testing.assert_close(fast, ref, **TOLERANCE[torch.float32])
    for name, grad in ref_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, **TOLERANCE[torch.float32], msg=name)


@pytest.mark.slow
def test_kernels_at_the_qwen_1_8b_widths():
    """Hidden 2048, FFN 5504, 16 heads of 128, in fp16 (a few rows: the interpreter is slow)."""
    dtype = torch.float16
    x, weight = _randn(3, 2048, dtype=dtype), 1 + _randn(2048, seed=1, scale=0.1)
    _check(lambda x, w: rms_norm(x, w, 1e-6, "triton"), lambda x, w: rms_norm_reference(x, w, 1e-6),
           [x, weight], dtype, (3, 2048))
    _check(lambda g: swiglu(g, "triton"), swiglu_reference, [_randn(3, 2 * 5504, dtype=dtype)], dtype, (3, 5504))
    positions = torch.arange(2045, 2048, device=DEVICE)[None]
    cos, sin = rotary_cos_sin(positions, rotary_inv_freq(128, 10000.0).to(DEVICE), dtype)
    x = _randn(1, 16, 3, 128, dtype=dtype)
    _check(lambda x: rotary(x, cos, sin, "triton"), lambda x: apply_rotary(x, cos, sin), [x], dtype,
           (1, 16, 3, 128))


def test_kernels_run_interpreted_on_cpu_and_compiled_on_cuda():
    from qwen_cli.kernels import rms_norm_triton

    assert isinstance(rms_norm_triton._forward, InterpretedFunction) == (DEVICE == "cpu")

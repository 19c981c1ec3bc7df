"""What only a CUDA GPU can check (skipped elsewhere; ``scripts/gpu_check.sh`` runs it): the static-cache
decode is replayed as CUDA graphs (no "skipping cudagraphs") and gives the eager engine's greedy tokens,
one graph per bucket serves every length and generation, and the int8 CUDA matmul matches a dequantised
reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from qwen_cli.inference import static_decode
from qwen_cli.inference.generate import generate
from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.model.quantize import Int8Linear, quantize_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
PROMPTS = [[5, 17, 42, 8, 99, 3, 7], [11, 2], [200, 150, 100, 50]]


@pytest.fixture(scope="module")
def model() -> QwenModel:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=256, hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                         intermediate_size=256, max_position_embeddings=512, init_std=0.2)
    return QwenModel(config).cuda().eval()


def test_graph_decode_equals_eager_and_is_captured(model):
    torch._dynamo.reset()
    counters.clear()
    for prompt, n in [(PROMPTS[0], 20), ([9] * 20, 30), ([1, 2], 60)]:
        assert generate(model, [prompt], n, compile=True) == generate(model, [prompt], n, compile=False)
    assert generate(model, PROMPTS, 24, compile=True) == generate(model, PROMPTS, 24, compile=False)
    assert generate(model, PROMPTS[:2] * 2, 16, compile=True) == generate(model, PROMPTS[:2] * 2, 16, compile=False)
    assert counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])  # buckets 1 and 4
    assert not counters["inductor"]["cudagraph_skips"], dict(counters["inductor"])
    assert static_decode.compile_seconds[("inductor", 4, 128)] > 0


def test_generate_takes_the_graph_path_by_default_on_cuda(model, monkeypatch):
    """eval, PPO rollouts and the specialisation evals call generate() without ``compile``."""
    built = []
    real = static_decode.StaticDecoder
    monkeypatch.setattr("qwen_cli.inference.generate.StaticDecoder",
                        lambda *args, **kwargs: built.append(args[0]) or real(*args, **kwargs))
    assert generate(model, PROMPTS, 8) == generate(model, PROMPTS, 8, compile=False)
    assert len(built) == 1


def test_int8_cuda_linear_matches_dequantised_reference():
    torch.manual_seed(1)
    linear = nn.Linear(256, 96, bias=True).cuda()
    q = Int8Linear(linear)
    w = linear.weight.detach()
    scale = w.abs().amax(dim=1, keepdim=True) / 127
    x = torch.randn(3, 256, device="cuda", dtype=torch.bfloat16)
    expected = x.float() @ (torch.round(w / scale).clamp(-127, 127) * scale.bfloat16().float()).T + linear.bias.detach()
    torch.testing.assert_close(q(x).float(), expected, rtol=2e-2, atol=2e-2 * float(expected.abs().max()))


def test_int8_graph_decode_runs_and_mostly_agrees(model):
    """The int8 model (every linear layer) replayed as graphs = its eager run; first tokens mostly as fp32."""
    torch.manual_seed(0)
    reference = QwenModel(model.config).cuda().eval()
    torch.manual_seed(0)
    int8 = quantize_model(QwenModel(model.config).cuda().eval(), "int8", min_elements=0)
    out = generate(int8, PROMPTS, 8, compile=True)
    assert out == generate(int8, PROMPTS, 8, compile=False)  # graph replay = eager on the same int8 weights
    assert sum(a[0] == b[0] for a, b in zip(out, generate(reference, PROMPTS, 8), strict=True)) >= 2


def test_loss_chunk_is_measured_once_per_shape_and_changes_no_result():
    from qwen_cli.kernels import cross_entropy

    gen = torch.Generator(device="cuda").manual_seed(0)
    h = torch.randn(3000, 64, device="cuda", generator=gen).requires_grad_()
    w = torch.randn(5000, 64, device="cuda", generator=gen).requires_grad_()
    y = torch.randint(0, 5000, (3000,), device="cuda", generator=gen)
    def chosen():
        return [c for key, c in cross_entropy.tuned_chunks().items() if key[1:4] == (3000, 64, 5000)]

    loss, _ = cross_entropy.linear_cross_entropy(h, w, y)
    assert len(chosen()) == 1 and chosen()[0] in (1024, 2048, 3000)  # the candidates cut at 3000 tokens
    cross_entropy.linear_cross_entropy(h, w, y)
    assert len(chosen()) == 1  # measured once
    fixed, _ = cross_entropy.linear_cross_entropy(h, w, y, 1024)
    torch.testing.assert_close(loss, fixed, rtol=1e-5, atol=1e-3)

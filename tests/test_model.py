"""The Qwen model: causality, shapes, preset sizes, attention backends, packed segments, KV cache."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from qwen_cli.model import KVCache, ModelConfig, QwenModel

TINY = ModelConfig(vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                   max_position_embeddings=64)


def model(config: ModelConfig = TINY, seed: int = 0) -> QwenModel:
    torch.manual_seed(seed)
    return QwenModel(config).eval()


def ids(b: int, t: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, TINY.vocab_size, (b, t), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_logits_to_keep():
    m, x = model(), ids(3, 11)
    assert m(x).shape == (3, 11, 97)
    assert m.hidden_states(x).shape == (3, 11, 32)
    torch.testing.assert_close(m(x, num_logits_to_keep=2), m(x)[:, -2:])


def test_future_tokens_do_not_change_earlier_logits():
    m, x = model(), ids(2, 16)
    changed = x.clone()
    changed[:, 9:] = (changed[:, 9:] + 1) % TINY.vocab_size
    a, b = m(x), m(changed)
    torch.testing.assert_close(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


@pytest.mark.parametrize("preset,params", [("qwen-1.8b", 1_836_828_672), ("qwen-7b", 7_721_324_544),
                                           ("qwen-14b", 14_167_290_880)])
def test_preset_parameter_counts(preset, params):
    with torch.device("meta"):
        m = QwenModel(ModelConfig.preset(preset))
    assert m.num_parameters() == params


def test_eager_and_sdpa_agree():
    x = ids(2, 12)
    eager = model(dataclasses.replace(TINY, attention_backend="eager"))
    sdpa = model(dataclasses.replace(TINY, attention_backend="sdpa"))
    torch.testing.assert_close(eager(x), sdpa(x), atol=1e-5, rtol=1e-5)


def test_segments_are_independent_documents():
    m = model()
    a, b = ids(1, 5, seed=2), ids(1, 7, seed=3)
    packed = torch.cat([a, b], dim=1)
    segments = torch.tensor([[0] * 5 + [1] * 7])
    out = m(packed, segment_ids=segments)
    torch.testing.assert_close(out[:, :5], m(a), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 5:], m(b), atol=1e-5, rtol=1e-5)


def test_kv_cache_decoding_matches_full_forward():
    m, x = model(), ids(2, 10)
    full = m(x)
    cache = KVCache(TINY, batch_size=2, max_len=10)
    steps = [m(x[:, :6], cache=cache)]
    steps += [m(x[:, i : i + 1], cache=cache) for i in range(6, 10)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_initialisation_std_per_module():
    """N(0, init_std) everywhere except the residual-stream writers o_proj / down_proj, which get
    init_std / sqrt(2 · layers) (GPT-2); biases 0, norm gains 1. Sizes make each std estimate good
    to about 0.5 %, so a 3 % tolerance separates the two stds (a factor of 4 apart) with no flakes."""
    config = ModelConfig(vocab_size=1024, hidden_size=256, num_layers=8, num_heads=4, num_kv_heads=2,
                         intermediate_size=704, init_std=0.03)
    m = model(config)
    residual = 0.03 / (2 * 8) ** 0.5
    for name, param in m.named_parameters():
        if name.endswith("bias"):
            assert torch.count_nonzero(param) == 0, name
        elif "norm" in name:
            assert torch.all(param == 1), name
        else:
            expected = residual if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.03
            assert param.std().item() == pytest.approx(expected, rel=0.03), name
            assert abs(param.mean().item()) < 0.05 * expected, name
    assert sum(n.endswith(("o_proj.weight", "down_proj.weight")) for n, _ in m.named_parameters()) == 16


@pytest.mark.parametrize("tied", [False, True])
def test_flops_per_token_counts_every_matmul_weight_once(tied):
    """6 FLOPs per weight per token (forward + backward) + PaLM's attention term 12 · layers · hidden · seq,
    with the weights counted by hand from the config: per layer q, k, v (grouped-query: k and v are
    kv_heads · head_dim wide), o, gate, up, down, then the output projection (also when tied to the
    embedding, which is a lookup and not counted). The implementation's N is all non-embedding
    parameters, so it also holds the qkv bias and the RMSNorm gains (about 1 % here)."""
    config = ModelConfig(vocab_size=97, hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=2,
                         intermediate_size=88, tie_word_embeddings=tied)
    h, kv, inter = 32, 2 * 8, 88
    per_layer = h * h + 2 * h * kv + h * h + 2 * h * inter + inter * h  # q, k+v, o, gate+up, down
    matmul = 3 * per_layer + 97 * h
    vectors = 3 * ((h + 2 * kv) + 2 * h) + h  # qkv bias and two norms per layer, the final norm
    assert model(config).flops_per_token(16) == 6 * (matmul + vectors) + 12 * 3 * h * 16


def test_casting_the_model_keeps_rope_frequencies_fp32():
    """A bf16 (or fp16) copy of the model keeps fp32 inverse frequencies: rounding them moves positions."""
    from qwen_cli.model.rope import rotary_inv_freq

    config = ModelConfig(vocab_size=64, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    for cast in (lambda m: m.to(torch.bfloat16), lambda m: m.half(), lambda m: m.to("cpu", torch.bfloat16)):
        model = cast(QwenModel(config))
        assert model.embed_tokens.weight.dtype != torch.float32
        assert model.inv_freq.dtype == torch.float32
        assert torch.equal(model.inv_freq, rotary_inv_freq(config.head_dim, config.rope_theta))

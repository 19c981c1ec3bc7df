"""Static-cache decode path: token-for-token equal to the eager engine (greedy, fp32) for one prompt
and a left-padded batch, including rows that stop early; one dynamo compile serves every length."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from qwen_cli.inference import static_decode
from qwen_cli.inference.generate import generate
from qwen_cli.model import ModelConfig, QwenModel

PROMPTS = [[5, 17, 42, 8, 99, 3, 7], [11, 2], [200, 150, 100, 50], [1]]


@pytest.fixture(scope="module")
def model() -> QwenModel:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=256, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                         intermediate_size=128, max_position_embeddings=512, init_std=0.2)
    return QwenModel(config).eval()


def test_static_step_eager_logits_match_eager_engine(model):
    """The uncompiled static step gives the eager engine's logits (same keys, masked rest)."""
    from qwen_cli.inference.generate import left_pad

    ids, mask = left_pad(PROMPTS, "cpu")
    with torch.inference_mode():
        eager = static_decode.EagerDecoder(model, ids, mask, 8)
        static = static_decode.StaticDecoder(model, ids, mask, 8, backend=None)
        a, b = eager.prefill(), static.prefill()
        for step in range(8):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
            token = a.argmax(-1)
            a, b = eager.step(token, step), static.step(token, step)


def test_static_equals_eager_token_for_token_and_compiles_once_per_batch_size(model):
    """Greedy fp32 tokens equal the eager engine for batch 1 at several prompt lengths and budgets,
    and for a left-padded batch with rows stopping early (stop id) and a repetition penalty;
    the step is captured once per batch size (dynamo's "eager" backend: tracing without codegen)."""
    torch._dynamo.reset()
    counters.clear()
    for prompt, n in [(PROMPTS[0], 20), ([9] * 20, 30), ([1, 2], 60), (list(range(40)), 17)]:
        assert generate(model, [prompt], n, compile="eager") == generate(model, [prompt], n)
    assert counters["stats"]["unique_graphs"] == 1
    eager = generate(model, PROMPTS, 24)
    assert generate(model, PROMPTS, 24, compile="eager") == eager
    stop = eager[1][3]  # a stop id some rows hit early: finished rows keep running in the static batch, unseen
    expected = generate(model, PROMPTS, 24, stop_ids=[stop])
    assert any(len(row) < 24 for row in expected)
    assert generate(model, PROMPTS, 24, stop_ids=[stop], compile="eager") == expected
    penalised = generate(model, PROMPTS, 16, repetition_penalty=1.3)
    assert generate(model, PROMPTS, 16, repetition_penalty=1.3, compile="eager") == penalised
    assert counters["stats"]["unique_graphs"] == 2 and not counters["recompiles"], dict(counters["recompiles"])
    assert static_decode.compile_seconds[("eager", 1, 128)] > 0


@pytest.mark.slow
def test_inductor_compiled_decode_equals_eager(model):
    torch._dynamo.reset()
    counters.clear()
    assert generate(model, PROMPTS, 12, compile=True) == generate(model, PROMPTS, 12)
    assert generate(model, PROMPTS[:3], 30, compile=True) == generate(model, PROMPTS[:3], 30)
    assert counters["stats"]["unique_graphs"] == 1  # batches of 4 and 3 share the bucket of 4


def test_context_extension_falls_back_to_eager_engine(model):
    from qwen_cli.inference.static_decode import static_supported

    torch.manual_seed(0)
    extended = QwenModel(model.config.__class__(**{**model.config.__dict__})).eval()
    extended.set_context_extension(rope_ntk="dynamic", logn_attn=True, train_length=8)
    assert static_supported(model) and not static_supported(extended)
    assert generate(extended, [PROMPTS[0]], 10, compile="eager") == generate(extended, [PROMPTS[0]], 10)


def test_buckets():
    """Batches round up to a power of two; capacities to 128 times a power of two."""
    assert [static_decode.batch_bucket(b) for b in (1, 2, 3, 4, 5, 8, 9)] == [1, 2, 4, 4, 8, 8, 16]
    assert [static_decode.capacity_bucket(n) for n in (1, 128, 129, 256, 257, 385, 512, 513)] == \
        [128, 128, 256, 256, 512, 512, 512, 1024]


def test_padded_bucket_reuses_one_graph_and_the_same_buffers(model):
    """Batches of 3 and 4 share the bucket of 4: one graph, the same static buffers (marked for
    cudagraph trees) across generations, tokens equal to the eager engine's for the 3 real rows."""
    torch._dynamo.reset()
    counters.clear()
    assert generate(model, PROMPTS[:3], 10, compile="eager") == generate(model, PROMPTS[:3], 10)
    slots = static_decode._SLOTS[model][(4, 128, torch.float32)]
    pointers = [t.data_ptr() for t in (*slots.cache.keys, slots.key_mask, slots.tokens, slots.positions, slots.slot)]
    assert generate(model, PROMPTS, 12, compile="eager") == generate(model, PROMPTS, 12)
    assert generate(model, PROMPTS[1:], 11, compile="eager") == generate(model, PROMPTS[1:], 11)
    assert static_decode._SLOTS[model][(4, 128, torch.float32)] is slots
    assert pointers == [t.data_ptr() for t in (*slots.cache.keys, slots.key_mask, slots.tokens, slots.positions,
                                               slots.slot)]
    assert all(hasattr(t, "_dynamo_static_input_type") for t in (*slots.cache.keys, *slots.cache.values,
                                                                 slots.key_mask, slots.slot))
    assert counters["stats"]["unique_graphs"] == 1 and not counters["recompiles"], dict(counters["recompiles"])


def test_static_step_positions_and_slot(model):
    """Each step writes at prompt width + step and rotates at each row's own length + step."""
    from qwen_cli.inference.generate import left_pad

    ids, mask = left_pad(PROMPTS[:3], "cpu")
    with torch.inference_mode():
        static = static_decode.StaticDecoder(model, ids, mask, 5, backend=None)
        static.prefill()
        static.step(torch.tensor([1, 2, 3]), 2)
    assert static.slots.slot.tolist() == [ids.shape[1] + 2]
    assert static.slots.positions[:, 0].tolist() == [9, 4, 6, 6]  # lengths 7, 2, 4 (+ the padded copy) + 2
    assert static.key_mask[:, ids.shape[1] + 2].all() and not static.key_mask[:, ids.shape[1] + 3].any()
    assert static.slots.tokens[:, 0].tolist() == [1, 2, 3, 0]


def test_static_cache_keeps_its_rows(model):
    """Reordering would replace the buffers the captured graph reads: the static cache refuses it."""
    from qwen_cli.model.kv_cache import StaticKVCache

    cache = StaticKVCache(model.config, 2, 128)
    with pytest.raises(NotImplementedError, match="keeps its rows"):
        cache.reorder(torch.tensor([0]))


def test_generate_stays_eager_by_default_off_cuda(model, monkeypatch):
    """compile=None means the graph path on CUDA only (tests/test_gpu_cuda.py checks that side)."""
    monkeypatch.setattr("qwen_cli.inference.generate.StaticDecoder",
                        lambda *args, **kwargs: pytest.fail("the static decoder was built on the CPU"))
    assert generate(model, PROMPTS, 8) == generate(model, PROMPTS, 8, compile=False)

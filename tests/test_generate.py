"""Generation engine: KV-cache decoding equals full recomputation, batching equals one-by-one,
stops, streaming, sampling determinism and filters, on a tiny random model (no tokenizer)."""

from __future__ import annotations

import pytest
import torch

from qwen_cli.inference.generate import filter_logits, generate
from qwen_cli.model import ModelConfig, QwenModel

PROMPTS = [[5, 17, 42, 8, 99, 3, 7], [11, 2], [200, 150, 100, 50], [1]]


@pytest.fixture(scope="module")
def model() -> QwenModel:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=256, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                         intermediate_size=128, max_position_embeddings=128, init_std=0.2)
    return QwenModel(config).eval()


def greedy_by_recompute(model: QwenModel, prompt: list[int], n: int) -> list[int]:
    """Reference: run the full sequence through the model (no cache) for every new token."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(prompt) :]


class CharTokenizer:
    """Stand-in tokenizer for stop strings: id i decodes to one letter."""

    def decode(self, ids) -> str:
        return "".join(chr(ord("a") + i % 26) for i in ids)


def test_kv_cache_decoding_matches_full_recompute(model):
    for prompt in PROMPTS:
        assert generate(model, [prompt], 12) == [greedy_by_recompute(model, prompt, 12)]


def test_batched_left_padded_equals_one_by_one(model):
    singles = [generate(model, [p], 10)[0] for p in PROMPTS]
    assert generate(model, PROMPTS, 10) == singles
    assert len({len(p) for p in PROMPTS}) > 1  # the batch really needed padding


def test_output_length_and_zero_tokens(model):
    assert [len(o) for o in generate(model, PROMPTS, 5)] == [5] * len(PROMPTS)
    assert generate(model, PROMPTS, 0) == [[] for _ in PROMPTS]
    assert generate(model, [], 5) == []


def test_stop_ids_end_rows_independently_and_are_excluded(model):
    full = [generate(model, [p], 12)[0] for p in PROMPTS]
    stop = full[0][4]  # a token row 0 emits mid-way
    expected = [out[: out.index(stop)] if stop in out else out for out in full]
    assert generate(model, PROMPTS, 12, stop_ids=[stop]) == expected
    assert len({len(e) for e in expected}) > 1  # rows finished at different steps


def test_stop_strings_keep_the_completing_token(model):
    tok = CharTokenizer()
    full = generate(model, [PROMPTS[0]], 12)[0]
    text = tok.decode(full)
    needle = text[5:7]
    end = text.index(needle) + len(needle)
    assert generate(model, [PROMPTS[0]], 12, stop_strings=[needle], tokenizer=tok) == [full[:end]]
    with pytest.raises(ValueError, match="tokenizer"):
        generate(model, [PROMPTS[0]], 3, stop_strings=["x"])


def test_streaming_callback_sees_every_returned_token_in_order(model):
    streamed: dict[int, list[int]] = {i: [] for i in range(len(PROMPTS))}
    out = generate(model, PROMPTS, 8, temperature=0.8, seed=3,
                   on_token=lambda i, t: streamed[i].append(t))
    assert [streamed[i] for i in range(len(PROMPTS))] == out


def test_seeded_sampling_is_deterministic(model):
    a = generate(model, PROMPTS, 10, temperature=1.0, top_p=0.95, seed=7)
    b = generate(model, PROMPTS, 10, temperature=1.0, top_p=0.95, seed=7)
    c = generate(model, PROMPTS, 10, temperature=1.0, top_p=0.95, seed=8)
    assert a == b
    assert a != c


def test_top_k_one_sampling_is_greedy(model):
    assert generate(model, PROMPTS, 8, temperature=1.3, top_k=1, seed=1) == generate(model, PROMPTS, 8)


def test_repetition_penalty_avoids_seen_tokens(model):
    out = generate(model, PROMPTS, 10, repetition_penalty=1e6)
    for prompt, new in zip(PROMPTS, out, strict=True):
        assert len(set(new)) == len(new)
        assert not set(new) & set(prompt)


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.8)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.81)).tolist() == [[False, False, False, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.1)).tolist() == [[False, True, True, True]]


def test_training_mode_with_dropout_is_restored_and_ignored():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=64, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                         dropout=0.5, init_std=0.2)
    net = QwenModel(config).train()
    assert generate(net, [[1, 2, 3]], 6) == generate(net, [[1, 2, 3]], 6)
    assert net.training


def test_invalid_arguments(model):
    for kwargs in ({"temperature": -1}, {"top_p": 0}, {"top_k": -1}, {"repetition_penalty": 0}):
        with pytest.raises(ValueError):
            generate(model, [[1]], 2, **kwargs)
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[]], 2)

"""Context extension (report §2.5): dynamic NTK, LogN, layer-wise windows, cached decoding, config mapping, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from qwen_cli.checkpoint import load_model, save_model
from qwen_cli.evaluation.long_context.sweep import length_chunks, parse_window_spec
from qwen_cli.interop import qwen1
from qwen_cli.interop.qwen2 import config_from_hf, config_to_hf
from qwen_cli.kernels.attention import attention, eager_attention
from qwen_cli.model import KVCache, ModelConfig, QwenModel
from qwen_cli.model.rope import logn_scale, ntk_alpha, rope_theta_for, rotary_inv_freq
from qwen_cli.tokenizer import Tokenizer


def qwen_alpha(length: int, trained: int) -> int:
    """Qwen's modeling_qwen.py ``get_ntk_alpha``, written out independently."""
    context_value = math.log(length / trained, 2) + 1
    return max(2 ** math.ceil(context_value) - 1, 1)


@pytest.mark.parametrize("length", [1, 100, 127, 128, 129, 200, 256, 257, 512, 513, 1024, 1025, 2048, 4097])
def test_ntk_alpha_and_base_follow_qwens_formula_at_bucket_edges(length):
    assert ntk_alpha(length, 128) == qwen_alpha(length, 128)
    theta = rope_theta_for(10000.0, 64, "dynamic", length, 128)
    assert theta == pytest.approx(10000.0 * qwen_alpha(length, 128) ** (64 / 62))


def test_alpha_buckets():
    assert [ntk_alpha(n, 128) for n in (128, 129, 256, 257, 512, 513)] == [1, 3, 3, 7, 7, 15]


def test_continuous_ntk_is_transformers_dynamic_rope_with_factor_one():
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = transformers.Qwen2Config(hidden_size=64, num_attention_heads=4, max_position_embeddings=128,
                                      rope_scaling={"rope_type": "dynamic", "factor": 1.0})
    for length in (200, 512, 3000):
        theirs, _ = ROPE_INIT_FUNCTIONS["dynamic"](config, "cpu", seq_len=length)
        ours = rotary_inv_freq(16, rope_theta_for(10000.0, 16, "continuous", length, 128))
        assert torch.allclose(theirs.float(), ours, rtol=1e-6)


def test_logn_scales_only_queries_past_the_training_length():
    positions = torch.arange(0, 300).unsqueeze(0)
    scale = logn_scale(positions, 128)[0, 0, :, 0]
    expected = [math.log(i, 128) if i > 128 else 1.0 for i in range(1, 301)]
    assert torch.allclose(scale, torch.tensor(expected), rtol=1e-6)


def reference_window_attention(q, k, v, window, pad_left=None):
    """softmax over keys j with i - window < j <= i (in key index space), plain loops over the mask."""
    t, s = q.shape[-2], k.shape[-2]
    mask = torch.zeros(t, s, dtype=torch.bool)
    for i in range(t):
        qi = s - t + i
        for j in range(s):
            mask[i, j] = j <= qi and (window == 0 or j > qi - window)
    mask = mask[None, None].expand(q.shape[0], 1, t, s).clone()
    if pad_left is not None:
        for b, n in enumerate(pad_left):
            mask[b, :, :, :n] = False
    return eager_attention(q, k, v, mask=mask, causal=False)


@pytest.mark.parametrize("window", [1, 5, 33, 600])
def test_banded_window_attention_matches_the_masked_reference(window):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 700, 8), torch.randn(2, 2, 700, 8), torch.randn(2, 2, 700, 8)
    out = attention(q, k, v, window=window)  # blockwise path: no T x S mask
    assert torch.allclose(out, reference_window_attention(q, k, v, window), atol=1e-5)


def test_window_with_a_padding_mask_and_a_single_query():
    torch.manual_seed(1)
    q, k, v = torch.randn(2, 2, 1, 8), torch.randn(2, 2, 20, 8), torch.randn(2, 2, 20, 8)
    mask = torch.ones(2, 1, 1, 20, dtype=torch.bool)
    mask[1, :, :, :3] = False  # row 1 is left-padded by 3
    out = attention(q, k, v, mask=mask, causal=False, window=6, backend="sdpa")
    assert torch.allclose(out, reference_window_attention(q, k, v, 6, pad_left=[0, 3]), atol=1e-5)


def extended_config(**overrides) -> ModelConfig:
    base = dict(vocab_size=64, hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=2, intermediate_size=64,
                max_position_embeddings=16, rope_ntk="dynamic", logn_attn=True, layer_windows=[6, 12, 0],
                train_length=8)
    return ModelConfig(**{**base, **overrides})


def test_cached_decoding_equals_a_full_recompute_across_ntk_buckets():
    torch.manual_seed(0)
    model = QwenModel(extended_config()).eval()
    ids = torch.randint(0, 64, (2, 40))
    cache = KVCache(model.config, 2, 40)
    with torch.no_grad():
        model(ids[:, :5], cache=cache)  # prefill inside the first bucket (alpha 1)
        for t in range(5, 40):  # decode through alpha 3 (9..16), 7 (17..32) and 15 (33..)
            step = model(ids[:, t:t + 1], cache=cache)[:, -1]
            full = model(ids[:, :t + 1])[:, -1]
            assert torch.allclose(step, full, atol=1e-4), f"position {t}"


@pytest.mark.parametrize("overrides, reach", [
    (dict(rope_ntk="dynamic"), 8),  # a sequence no longer than T keeps the trained base
    (dict(logn_attn=True), 8),  # queries at positions <= T are not scaled
    (dict(layer_windows=[6, 0, 0]), 6),  # the first 6 queries see all their keys anyway
])
def test_each_technique_acts_only_past_its_reach(overrides, reach):
    torch.manual_seed(0)
    ids = torch.randint(0, 64, (1, 40))
    off = dict(rope_ntk="none", logn_attn=False, layer_windows=[])
    plain = QwenModel(extended_config(**off)).eval()
    model = QwenModel(extended_config(**(off | overrides))).eval()
    model.load_state_dict(plain.state_dict())
    with torch.no_grad():
        assert torch.equal(plain(ids[:, :reach]), model(ids[:, :reach]))
        assert not torch.allclose(plain(ids)[:, -1], model(ids)[:, -1])


def test_windows_round_trip_and_match_transformers_sliding_window_layers(tmp_path):
    transformers = pytest.importorskip("transformers")
    # 320 rows: the saved tokenizer (56 ranks + 208 Qwen specials) must fit the embedding to load back
    config = extended_config(vocab_size=320, rope_ntk="none", logn_attn=False, layer_windows=[6, 6, 0])
    hf = config_to_hf(config, torch.float32)
    assert hf["layer_types"] == ["sliding_attention", "sliding_attention", "full_attention"]
    assert config_from_hf(hf) == config
    torch.manual_seed(0)
    model = QwenModel(config).eval()
    save_model(tmp_path / "ckpt", model, Tokenizer({bytes([i]): i for i in range(56)}, name="t"))
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", attn_implementation="eager").eval()
    ids = torch.randint(0, 64, (2, 30))
    with torch.no_grad():
        assert torch.allclose(model(ids), theirs(ids).logits, atol=1e-4)
    assert load_model(tmp_path / "ckpt").config.layer_windows == [6, 6, 0]


def test_qwen1_import_keeps_dynamic_ntk_logn_and_training_length(tmp_path):
    hf = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 256,
          "vocab_size": 512, "seq_length": 2048, "use_dynamic_ntk": True, "use_logn_attn": True}
    config = qwen1.model_config(hf, tmp_path / "config.json")
    assert (config.rope_ntk, config.logn_attn, config.train_length) == ("dynamic", True, 2048)
    plain = qwen1.model_config({**hf, "use_dynamic_ntk": False, "use_logn_attn": False}, tmp_path / "config.json")
    assert (plain.rope_ntk, plain.logn_attn) == ("none", False)


def test_window_specs():
    assert parse_window_spec("T@2", 4, 128) == [128, 128, 0, 0]
    assert parse_window_spec("0.5T,2T,0,300", 4, 128) == [64, 256, 0, 300]
    assert parse_window_spec("none", 4, 128) == []
    for bad in ("T@5", "1,2", "x@1", "1.5@1"):
        with pytest.raises(Exception, match="--window"):
            parse_window_spec(bad, 4, 128)


def test_chunks_are_exact_length_from_long_enough_documents_within_the_budget():
    docs = [list(range(10)), list(range(100, 125)), list(range(200, 203))]
    chunks = length_chunks(docs, 8, max_tokens=24)
    assert chunks == [list(range(8)), list(range(100, 108)), list(range(108, 116))]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctx")
    torch.manual_seed(0)
    model = QwenModel(ModelConfig(vocab_size=512, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                  max_position_embeddings=32))
    save_model(root / "ckpt", model, Tokenizer({bytes([i]): i for i in range(256)}, name="bytes"))
    corpus = root / "corpus.txt"
    corpus.write_text("def f(x):\n    return x * 2\n" * 40)
    return root


def test_cli_writes_an_extended_checkpoint_and_runs_the_sweep(tiny_ckpt, tmp_path, run_qwen):
    ckpt, corpus = tiny_ckpt / "ckpt", tiny_ckpt / "corpus.txt"
    code, _, err = run_qwen("extend-context", ckpt, "--out", tmp_path / "ext", "--max-length", 256,
                            "--window", "T@1", "--train-length", 16)
    assert code == 0, err
    config = load_model(tmp_path / "ext").config
    assert (config.rope_ntk, config.logn_attn, config.layer_windows, config.train_length,
            config.max_position_embeddings) == ("dynamic", True, [16, 0], 16, 256)
    code, out, err = run_qwen("extend-context", ckpt, "--corpus", corpus, "--train-length", 16,
                              "--lengths", "16,64", "--tokens", 256, "--json", "--plot", tmp_path / "p.png")
    assert code == 0, err
    result = json.loads(out)
    rows = result["perplexity"]
    assert set(rows) >= {"plain", "ntk", "ntk+logn", "ntk+logn+window[T@1]", "ntk-continuous+logn"}
    assert all(row["16"] == pytest.approx(rows["plain"]["16"]) for row in rows.values())  # nothing acts at T
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, message", [
    ((), "nothing to do"),
    (("--out", "OUT", "--window", "3@9"), "--window"),
    (("--out", "OUT", "--ntk", "yarn"), "--ntk"),
    (("--corpus", "CORPUS", "--methods", "plain,magic"), "unknown method"),
])
def test_cli_bad_input_is_one_line_exit_2(tiny_ckpt, tmp_path, run_qwen, args, message):
    args = [str(tmp_path / "out") if a == "OUT" else str(tiny_ckpt / "corpus.txt") if a == "CORPUS" else a
            for a in args]
    code, _, err = run_qwen("extend-context", tiny_ckpt / "ckpt", *args)
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()


def test_convert_to_hf_names_what_transformers_cannot_express(tiny_ckpt, tmp_path, run_qwen):
    code, _, err = run_qwen("extend-context", tiny_ckpt / "ckpt", "--out", tmp_path / "ext", "--window", "4,8",
                            "--train-length", 16)
    assert code == 0 and err.count("note: transformers' Qwen2 cannot express") == 3
    code, out, err = run_qwen("convert", tmp_path / "ext", tmp_path / "hf", "--to", "hf", "--json")
    assert code == 0, err
    assert [n.split()[0] for n in json.loads(out)["not_expressible"]] == ["dynamic", "LogN", "several"]
    code, out, _ = run_qwen("convert", tiny_ckpt / "ckpt", tmp_path / "plain", "--to", "hf", "--json")
    assert json.loads(out)["not_expressible"] == []

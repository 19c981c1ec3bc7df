"""Qwen (v1) import: a checkpoint in the released layout, checked against a forward pass written here.

The reference below follows Qwen-1's modeling code with plain torch ops and shares nothing with
qwen_cli.model: RMSNorm, fused ``c_attn`` split into Q/K/V, rotate-half rotary embedding,
causal softmax attention, ``c_proj``, and the MLP ``c_proj(w1(x) * silu(w2(x)))``.
"""

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import save_file

from qwen_cli.checkpoint import load_model
from qwen_cli.checkpoint.convert import convert
from qwen_cli.checkpoint.files import read_hf_tensors
from qwen_cli.errors import UserError
from qwen_cli.tokenizer import load_tokenizer
from qwen_cli.tokenizer.vocabulary import qwen_ranks_path

HIDDEN, HEADS, LAYERS, FFN, VOCAB, EPS, BASE = 32, 4, 2, 48, 151936, 1e-6, 10000.0
QWEN1_CONFIG = {
    "architectures": ["QWenLMHeadModel"], "model_type": "qwen", "auto_map": {"AutoConfig": "configuration_qwen.QWenConfig"},
    "hidden_size": HIDDEN, "num_attention_heads": HEADS, "num_hidden_layers": LAYERS, "intermediate_size": 2 * FFN,
    "kv_channels": HIDDEN // HEADS, "rotary_emb_base": BASE, "rotary_pct": 1.0, "layer_norm_epsilon": EPS,
    "seq_length": 2048, "max_position_embeddings": 2048, "vocab_size": VOCAB, "no_bias": True,
    "tie_word_embeddings": False, "use_dynamic_ntk": True, "use_logn_attn": True, "bf16": False,
    "tokenizer_class": "QWenTokenizer",
}


def qwen1_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    w = {"transformer.wte.weight": rand(VOCAB, HIDDEN), "transformer.ln_f.weight": 1 + rand(HIDDEN),
         "lm_head.weight": rand(VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"transformer.h.{i}."
        w |= {p + "ln_1.weight": 1 + rand(HIDDEN), p + "ln_2.weight": 1 + rand(HIDDEN),
              p + "attn.c_attn.weight": rand(3 * HIDDEN, HIDDEN), p + "attn.c_attn.bias": rand(3 * HIDDEN),
              p + "attn.c_proj.weight": rand(HIDDEN, HIDDEN), p + "mlp.w1.weight": rand(FFN, HIDDEN),
              p + "mlp.w2.weight": rand(FFN, HIDDEN), p + "mlp.c_proj.weight": rand(HIDDEN, FFN)}
    return w


def write_qwen1_dir(path, weights, config=QWEN1_CONFIG):
    """Sharded like the release: model-0000N-of-0000M.safetensors + index, config.json, qwen.tiktoken."""
    path.mkdir(parents=True)
    names = list(weights)
    shards = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: weights[n] for n in shard}, path / file, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(shard, file)
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (path / "config.json").write_text(json.dumps(config))
    shutil.copyfile(qwen_ranks_path(), path / "qwen.tiktoken")


def reference_forward(w: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """Qwen-1's forward pass in plain torch ops (no padding, positions 0..T-1)."""
    def rms(x, weight):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))

    b, t = ids.shape
    d = HIDDEN // HEADS
    inv_freq = 1.0 / BASE ** (torch.arange(0, d, 2).float() / d)
    freqs = torch.outer(torch.arange(t).float(), inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]

    def rotate(x):  # x: [b, t, heads, d]
        x1, x2 = x[..., : d // 2], x[..., d // 2:]
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    causal = torch.ones(t, t, dtype=torch.bool).tril()
    x = w["transformer.wte.weight"][ids]
    for i in range(LAYERS):
        p = f"transformer.h.{i}."
        h = rms(x, w[p + "ln_1.weight"])
        mixed = h @ w[p + "attn.c_attn.weight"].T + w[p + "attn.c_attn.bias"]
        q, k, v = (part.reshape(b, t, HEADS, d) for part in mixed.split(HIDDEN, dim=-1))
        q, k = rotate(q), rotate(k)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
        probs = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        attn = torch.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, HIDDEN)
        x = x + attn @ w[p + "attn.c_proj.weight"].T
        h = rms(x, w[p + "ln_2.weight"])
        a1, a2 = h @ w[p + "mlp.w1.weight"].T, h @ w[p + "mlp.w2.weight"].T
        x = x + (a1 * torch.nn.functional.silu(a2)) @ w[p + "mlp.c_proj.weight"].T
    return rms(x, w["transformer.ln_f.weight"]) @ w["lm_head.weight"].T


def test_qwen1_import_matches_reference_forward(tmp_path):
    weights = qwen1_weights()
    src, dst = tmp_path / "Qwen-tiny", tmp_path / "ours"
    write_qwen1_dir(src, weights)
    result = convert(src, dst)
    assert result.source_format == "qwen1"

    model = load_model(dst)
    cfg = model.config
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.intermediate_size, cfg.tie_word_embeddings) == (HEADS, HEADS, FFN, False)
    tokenizer = load_tokenizer(dst)
    assert tokenizer.hash == load_tokenizer("qwen").hash
    ids = torch.tensor([tokenizer.encode("通义千问 Qwen-7B: 1+1=2, print('hi')")[:12],
                        tokenizer.encode("The released layout fuses q, k and v in c_attn.")[:12]])
    with torch.no_grad():
        ours, theirs = model(ids), reference_forward(weights, ids)
    diff = (ours - theirs).abs().max().item()
    print(f"import qwen1 max |dlogits| = {diff:.3e}")
    assert diff <= 1e-5

    hf = read_hf_tensors(dst)  # w2 is the gate, w1 the up projection
    assert torch.equal(hf["model.layers.1.mlp.gate_proj.weight"], weights["transformer.h.1.mlp.w2.weight"])
    assert torch.equal(hf["model.layers.1.mlp.up_proj.weight"], weights["transformer.h.1.mlp.w1.weight"])


def test_qwen1_detected_by_tensor_names_and_bf16(tmp_path):
    weights = qwen1_weights(seed=1)
    config = {k: v for k, v in QWEN1_CONFIG.items() if k not in ("model_type", "architectures")}
    src = tmp_path / "no-model-type"
    write_qwen1_dir(src, weights, config)
    result = convert(src, tmp_path / "ours", dtype="bf16")
    assert (result.source_format, result.dtype) == ("qwen1", "bfloat16")
    hf = read_hf_tensors(tmp_path / "ours")
    assert torch.equal(hf["model.layers.0.self_attn.k_proj.bias"],
                       weights["transformer.h.0.attn.c_attn.bias"][HIDDEN:2 * HIDDEN].to(torch.bfloat16))


@pytest.mark.parametrize("change,culprit", [
    ({"no_bias": False}, "no_bias"),
    ({"rotary_pct": 0.5}, "rotary_pct"),
    ({"intermediate_size": 2 * FFN + 2}, "transformer.h.0.mlp.w2.weight"),
])
def test_qwen1_unsupported_or_mismatched_config(change, culprit, tmp_path):
    src = tmp_path / "bad"
    write_qwen1_dir(src, qwen1_weights(), {**QWEN1_CONFIG, **change})
    with pytest.raises(UserError, match=culprit):
        convert(src, tmp_path / "ours")
    assert not (tmp_path / "ours").exists()

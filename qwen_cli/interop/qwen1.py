"""Import of released Qwen (v1) checkpoints (``model_type: qwen``, ``QWenLMHeadModel``).

Qwen-1 layout, per layer N (``transformer.h.N.``):

    ln_1, ln_2                   RMSNorm weights (before attention / before the MLP)
    attn.c_attn.{weight,bias}    fused Q, K, V projection [3·hidden, hidden], rows in that order
    attn.c_proj.weight           attention output projection (no bias)
    mlp.w1, mlp.w2               the MLP computes ``c_proj(w1(x) * silu(w2(x)))``: w2 is the gate,
                                 w1 the up projection, each of width ``intermediate_size / 2``
    mlp.c_proj.weight            MLP down projection

plus ``transformer.wte`` (embedding), ``transformer.ln_f`` (final norm) and an untied ``lm_head``.
Config keys: hidden_size, num_attention_heads, num_hidden_layers, intermediate_size (twice the
FFN width), kv_channels (head dim), rotary_emb_base, rotary_pct, layer_norm_epsilon,
seq_length, vocab_size, no_bias. The tokenizer is the directory's ``qwen.tiktoken``, which
``qwen_cli.tokenizer.load_tokenizer`` reads directly. Import direction only: exporting to
Qwen-1's layout would also need its remote modeling code, which transformers does not ship.

Qwen-1's inference-time context extension is kept: ``use_dynamic_ntk`` -> ``rope_ntk = "dynamic"``,
``use_logn_attn`` -> ``logn_attn``, and ``seq_length`` (the training length T of both formulas)
-> ``train_length`` as well as ``max_position_embeddings``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qwen_cli.errors import UserError
from qwen_cli.interop.adapter import TensorRef
from qwen_cli.model import ModelConfig
from qwen_cli.model.config import ConfigError, config_from, required

MODEL_TYPE = "qwen"
ARCHITECTURE = "QWenLMHeadModel"
TENSOR_PREFIX = "transformer.h."


def model_config(hf: dict, path: Path) -> ModelConfig:
    """``ModelConfig`` from a Qwen-1 ``config.json``; UserError naming the key that is wrong."""
    try:
        config = config_from(_values(hf))
    except ConfigError as exc:
        raise UserError(exc.at(str(path))) from None
    if hf.get("kv_channels", config.head_dim) != config.head_dim:
        raise UserError(f"{path}: kv_channels {hf['kv_channels']} differs from hidden_size / num_attention_heads")
    if hf.get("rotary_pct", 1.0) != 1.0:
        raise UserError(f"{path}: rotary_pct {hf['rotary_pct']} is not supported (rotary on the full head only)")
    if not hf.get("no_bias", True):
        raise UserError(f"{path}: no_bias=false is not supported (bias only on c_attn)")
    if hf.get("tie_word_embeddings", False):
        raise UserError(f"{path}: tie_word_embeddings=true is not a Qwen-1 layout")
    return config


def _values(hf: dict) -> dict[str, tuple[str, Any]]:
    """``ModelConfig`` field -> (Qwen-1 config.json key, value)."""
    ffn_double = required(hf, "intermediate_size")
    if isinstance(ffn_double, int) and ffn_double % 2:
        raise ConfigError("intermediate_size", f"must be even (it is twice the FFN width), got {ffn_double}")
    seq_key = "seq_length" if "seq_length" in hf else "max_position_embeddings"
    return {
        "vocab_size": ("vocab_size", required(hf, "vocab_size")),
        "hidden_size": ("hidden_size", required(hf, "hidden_size")),
        "num_layers": ("num_hidden_layers", required(hf, "num_hidden_layers")),
        "num_heads": ("num_attention_heads", required(hf, "num_attention_heads")),
        # a non-integer is passed on as it is, for ModelConfig to refuse
        "intermediate_size": ("intermediate_size", ffn_double // 2 if isinstance(ffn_double, int) else ffn_double),
        "max_position_embeddings": (seq_key, hf.get(seq_key, 2048)),
        "rope_theta": ("rotary_emb_base", hf.get("rotary_emb_base", 10000.0)),
        "rms_norm_eps": ("layer_norm_epsilon", hf.get("layer_norm_epsilon", 1e-6)),
        "tie_word_embeddings": ("tie_word_embeddings", False),
        "init_std": ("initializer_range", hf.get("initializer_range", 0.02)),
        "rope_ntk": ("use_dynamic_ntk", "dynamic" if hf.get("use_dynamic_ntk", False) else "none"),
        "logn_attn": ("use_logn_attn", bool(hf.get("use_logn_attn", False))),
        "train_length": ("seq_length", hf.get("seq_length", 0)),
    }


def plan(config: ModelConfig) -> dict[str, TensorRef]:
    """Qwen2 output name -> Qwen-1 source tensor (rows of ``c_attn`` for Q, K and V)."""
    hidden = config.hidden_size
    out = {"model.embed_tokens.weight": TensorRef("transformer.wte.weight")}
    for i in range(config.num_layers):
        src, dst = f"{TENSOR_PREFIX}{i}.", f"model.layers.{i}."
        for kind in ("weight", "bias"):
            for j, proj in enumerate("qkv"):
                out[f"{dst}self_attn.{proj}_proj.{kind}"] = TensorRef(f"{src}attn.c_attn.{kind}",
                                                                     (j * hidden, (j + 1) * hidden))
        out[f"{dst}self_attn.o_proj.weight"] = TensorRef(f"{src}attn.c_proj.weight")
        out[f"{dst}mlp.gate_proj.weight"] = TensorRef(f"{src}mlp.w2.weight")
        out[f"{dst}mlp.up_proj.weight"] = TensorRef(f"{src}mlp.w1.weight")
        out[f"{dst}mlp.down_proj.weight"] = TensorRef(f"{src}mlp.c_proj.weight")
        out[f"{dst}input_layernorm.weight"] = TensorRef(f"{src}ln_1.weight")
        out[f"{dst}post_attention_layernorm.weight"] = TensorRef(f"{src}ln_2.weight")
    out["model.norm.weight"] = TensorRef("transformer.ln_f.weight")
    out["lm_head.weight"] = TensorRef("lm_head.weight")
    return out


def ignorable(config: ModelConfig):
    """Source tensors that may be present but are not needed: non-persistent rotary buffers."""

    def check(name: str) -> bool:
        return name.endswith("rotary_emb.inv_freq")

    return check

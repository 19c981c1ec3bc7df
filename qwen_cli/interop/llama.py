"""Import of Llama-family Hugging Face directories (``model_type`` ``llama`` or ``mistral``).

A Llama decoder is a Qwen2 decoder without the q/k/v biases: the same tensor names
(``model.layers.N.self_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``, the two RMSNorms),
SwiGLU, RoPE on the full head with the rotate-half convention, grouped-query attention and
optionally tied embeddings. So every output tensor comes from the source tensor of the same
name, and the q/k/v biases our model (and Qwen2) carries are written as zeros, which leaves the
function unchanged: transformers' Qwen2 and Llama give identical logits on the result.

What that layout cannot represent is refused with one line naming the key: a rope scaling other
than plain RoPE (``llama3``, ``linear``, ``yarn`` …), Mistral's ``sliding_window`` (when it is
shorter than the context), ``attention_bias`` (Llama's bias is on o_proj too), ``mlp_bias``,
an activation other than SiLU and a ``head_dim`` other than ``hidden_size / num_attention_heads``.
"""

from __future__ import annotations

from pathlib import Path

from qwen_cli.errors import UserError
from qwen_cli.interop import qwen2
from qwen_cli.interop.adapter import TensorRef
from qwen_cli.model import ModelConfig

MODEL_TYPE = "llama"
MODEL_TYPES = ("llama", "mistral")
_BIASES = tuple(f"self_attn.{p}_proj.bias" for p in "qkv")


def model_config(hf: dict, path: Path) -> ModelConfig:
    """``ModelConfig`` from a Llama/Mistral ``config.json``; UserError for what Qwen2 cannot represent."""
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise UserError(f"{path}: model_type {model_type!r} is not one of {', '.join(MODEL_TYPES)}")
    if hf.get("hidden_act", "silu") != "silu":
        raise UserError(f"{path}: hidden_act {hf['hidden_act']!r} is not supported (silu only)")
    for key in ("attention_bias", "mlp_bias"):
        if hf.get(key):
            raise UserError(f"{path}: {key}=true cannot be represented (Qwen2 has biases on q/k/v only)")
    window = hf.get("sliding_window")
    if window and window < hf.get("max_position_embeddings", 2048):
        raise UserError(f"{path}: sliding_window {window} (shorter than max_position_embeddings) cannot be "
                        "represented; only full attention is imported")
    shaped = {key: value for key, value in hf.items() if key not in ("sliding_window", "use_sliding_window")}
    return qwen2.checked_config(shaped, path)


def plan(config: ModelConfig) -> dict[str, TensorRef]:
    """Every tensor from the source tensor of the same name; q/k/v biases are zeros."""
    return {name: TensorRef(name, zeros=shape if name.endswith(_BIASES) else None)
            for name, shape in qwen2.expected_shapes(config).items()}


ignorable = qwen2.ignorable

"""The Qwen2 family (Qwen2, Qwen2.5, and our own checkpoints): config checks, tensor plan, HF export files.

Our checkpoint directory already uses the Qwen2 layout, so importing a Qwen2 checkpoint or
exporting ours maps every tensor to the tensor of the same name; what needs care is the config
(grouped-query attention, tied embeddings, features our model does not implement) and, on
export, the files transformers and vLLM read besides the weights (``generation_config.json``).
"""

from __future__ import annotations

from pathlib import Path

from qwen_cli.errors import UserError
from qwen_cli.hf_format import config_from_hf
from qwen_cli.interop.weights import TensorRef, expected_shapes
from qwen_cli.model import ModelConfig

MODEL_TYPE = "qwen2"
GENERATION_CONFIG_FILE = "generation_config.json"


def model_config(hf: dict, path: Path) -> ModelConfig:
    """``ModelConfig`` from a Qwen2 ``config.json``; UserError for anything our model cannot run."""
    if hf.get("model_type") != MODEL_TYPE:
        raise UserError(f"{path}: model_type {hf.get('model_type')!r} is not {MODEL_TYPE!r}")
    if hf.get("use_sliding_window"):
        raise UserError(f"{path}: use_sliding_window=true is not supported (full attention only)")
    if hf.get("hidden_act", "silu") != "silu":
        raise UserError(f"{path}: hidden_act {hf['hidden_act']!r} is not supported (silu only)")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise UserError(f"{path}: rope scaling {rope_type!r} is not supported (plain RoPE only)")
    try:
        config = config_from_hf(hf)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: invalid Qwen2 config ({exc})") from None
    head_dim = hf.get("head_dim")
    if head_dim is not None and head_dim != config.head_dim:
        raise UserError(f"{path}: head_dim {head_dim} differs from hidden_size / num_attention_heads "
                        f"({config.head_dim}); not supported")
    return config


def plan(config: ModelConfig) -> dict[str, TensorRef]:
    """Every output tensor comes from the source tensor of the same name."""
    return {name: TensorRef(name) for name in expected_shapes(config)}


def ignorable(config: ModelConfig):
    """Source tensors that may be present but are not needed: a tied ``lm_head`` and rotary buffers."""

    def check(name: str) -> bool:
        return name.endswith("rotary_emb.inv_freq") or (config.tie_word_embeddings and name == "lm_head.weight")

    return check


def generation_config(special_ids: dict[str, int]) -> dict:
    """``generation_config.json``: stop at ``<|im_end|>`` (chat) or ``<|endoftext|>`` (documents)."""
    eot, im_end = special_ids["<|endoftext|>"], special_ids["<|im_end|>"]
    return {"bos_token_id": eot, "eos_token_id": [im_end, eot], "pad_token_id": eot, "do_sample": False}

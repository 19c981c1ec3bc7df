"""The Qwen2 family adapter (Qwen2, Qwen2.5 and our own checkpoints): names and config, both directions.

A checkpoint directory written by qwen_cli *is* a transformers Qwen2 model directory:
``config.json`` with ``model_type: qwen2`` and safetensors with Qwen2 parameter names. The
model keeps fused projections for speed (``qkv_proj``, ``gate_up_proj``); they are split on
the way out (:func:`to_hf_state_dict`) and concatenated on the way in (:func:`from_hf_state_dict`),
which is exact (no arithmetic on the values). :func:`config_to_hf` / :func:`config_from_hf` map
``ModelConfig`` to ``config.json`` and back; fields Qwen2's config has no key for are kept under
``qwen_cli`` so a round trip is exact.

As a conversion source (``qwen convert``) every tensor maps to the tensor of the same name
(:func:`plan`); what needs care is the config (grouped-query attention, tied embeddings,
features our model does not implement: :func:`model_config`) and, on export, the file
transformers and vLLM read besides the weights (:func:`generation_config`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from qwen_cli.errors import UserError
from qwen_cli.interop.adapter import TensorRef
from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.model.config import ConfigError, config_from, required

MODEL_TYPE = "qwen2"
GENERATION_CONFIG_FILE = "generation_config.json"
HF_ARCHITECTURE = "Qwen2ForCausalLM"
# Our fields that Qwen2's config.json has no key for; kept under this key so a round trip is exact.
EXTRA_KEY = "qwen_cli"


def to_hf_state_dict(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict -> Hugging Face Qwen2 names (tensors are views; contiguous copies for saving)."""
    hidden, kv_dim = config.hidden_size, config.num_kv_heads * config.head_dim
    out: dict[str, torch.Tensor] = {"model.embed_tokens.weight": state["embed_tokens.weight"]}
    for i in range(config.num_layers):
        ours, theirs = f"layers.{i}.", f"model.layers.{i}."
        for kind in ("weight", "bias"):
            q, k, v = state[f"{ours}attn.qkv_proj.{kind}"].split((hidden, kv_dim, kv_dim), dim=0)
            out[f"{theirs}self_attn.q_proj.{kind}"] = q
            out[f"{theirs}self_attn.k_proj.{kind}"] = k
            out[f"{theirs}self_attn.v_proj.{kind}"] = v
        out[f"{theirs}self_attn.o_proj.weight"] = state[f"{ours}attn.o_proj.weight"]
        gate, up = state[f"{ours}mlp.gate_up_proj.weight"].chunk(2, dim=0)
        out[f"{theirs}mlp.gate_proj.weight"] = gate
        out[f"{theirs}mlp.up_proj.weight"] = up
        out[f"{theirs}mlp.down_proj.weight"] = state[f"{ours}mlp.down_proj.weight"]
        out[f"{theirs}input_layernorm.weight"] = state[f"{ours}attn_norm.weight"]
        out[f"{theirs}post_attention_layernorm.weight"] = state[f"{ours}mlp_norm.weight"]
    out["model.norm.weight"] = state["norm.weight"]
    if not config.tie_word_embeddings:
        out["lm_head.weight"] = state["lm_head.weight"]
    return {name: tensor.contiguous() for name, tensor in out.items()}


def from_hf_state_dict(hf: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Hugging Face Qwen2 names -> our state dict. Raises KeyError naming a missing tensor."""

    def take(name: str) -> torch.Tensor:
        if name not in hf:
            raise KeyError(name)
        return hf[name]

    state = {"embed_tokens.weight": take("model.embed_tokens.weight")}
    for i in range(config.num_layers):
        ours, theirs = f"layers.{i}.", f"model.layers.{i}."
        for kind in ("weight", "bias"):
            state[f"{ours}attn.qkv_proj.{kind}"] = torch.cat(
                [take(f"{theirs}self_attn.{p}_proj.{kind}") for p in "qkv"], dim=0
            )
        state[f"{ours}attn.o_proj.weight"] = take(f"{theirs}self_attn.o_proj.weight")
        state[f"{ours}mlp.gate_up_proj.weight"] = torch.cat(
            [take(f"{theirs}mlp.gate_proj.weight"), take(f"{theirs}mlp.up_proj.weight")], dim=0
        )
        state[f"{ours}mlp.down_proj.weight"] = take(f"{theirs}mlp.down_proj.weight")
        state[f"{ours}attn_norm.weight"] = take(f"{theirs}input_layernorm.weight")
        state[f"{ours}mlp_norm.weight"] = take(f"{theirs}post_attention_layernorm.weight")
    state["norm.weight"] = take("model.norm.weight")
    state["lm_head.weight"] = state["embed_tokens.weight"] if config.tie_word_embeddings else take("lm_head.weight")
    return state


def config_to_hf(config: ModelConfig, dtype: torch.dtype, special_ids: dict[str, int] | None = None) -> dict:
    """A transformers ``Qwen2Config`` dictionary for ``config.json``."""
    special_ids = special_ids or {}
    eos = special_ids.get("<|endoftext|>")
    return {
        "architectures": [HF_ARCHITECTURE],
        "model_type": "qwen2",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_position_embeddings,
        "rope_theta": config.rope_theta,
        "rms_norm_eps": config.rms_norm_eps,
        "tie_word_embeddings": config.tie_word_embeddings,
        "attention_dropout": config.dropout,
        "initializer_range": config.init_std,
        **sliding_window_to_hf(config),
        "use_cache": True,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "torch_dtype": str(dtype).removeprefix("torch."),
        EXTRA_KEY: {"dropout": config.dropout, "attention_backend": config.attention_backend,
                    "rope_ntk": config.rope_ntk, "logn_attn": config.logn_attn,
                    "layer_windows": list(config.layer_windows), "train_length": config.train_length},
    }


def sliding_window_to_hf(config: ModelConfig) -> dict:
    """transformers' per-layer sliding windows (``layer_types``): exact when every windowed layer
    shares one size; otherwise plain full attention (see :func:`hf_limitations`)."""
    sizes = {w for w in config.layer_windows if w}
    if len(sizes) != 1:
        return {"use_sliding_window": False}
    (size,) = sizes
    return {"use_sliding_window": True, "sliding_window": size, "max_window_layers": config.num_layers,
            "layer_types": ["sliding_attention" if w else "full_attention" for w in config.layer_windows]}


def hf_limitations(config: ModelConfig) -> list[str]:
    """What of ``config`` transformers' Qwen2 cannot express (it then runs plain RoPE / full attention)."""
    notes = []
    if config.rope_ntk != "none":
        notes.append(f"{config.rope_ntk} NTK-aware RoPE (transformers' 'dynamic' rope type scales the base by "
                     "(factor·L/T - factor + 1), not Qwen's bucketed alpha)")
    if config.logn_attn:
        notes.append("LogN attention scaling")
    if len({w for w in config.layer_windows if w}) > 1:
        notes.append(f"several window sizes {sorted({w for w in config.layer_windows if w})} (one sliding_window only)")
    return notes


def _object(hf: dict, key: str) -> dict:
    """``hf[key]`` when it is a JSON object, ``{}`` when absent or null."""
    value = hf.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be an object, got {value!r}")
    return value


def _rope(hf: dict) -> dict:
    """The rope scaling object (``rope_parameters``, or ``rope_scaling`` in older configs), ``{}`` if none."""
    return _object(hf, "rope_parameters") or _object(hf, "rope_scaling")


def _windows_from_hf(hf: dict, layers: int) -> tuple[str, list]:
    """(the key they come from, per-layer windows) of a transformers config with ``use_sliding_window``:
    ``layer_types`` or, in older configs, ``max_window_layers`` (layers from that index on use the window)."""
    size = hf.get("sliding_window")
    if not hf.get("use_sliding_window") or not size:
        return "use_sliding_window", []
    types = hf.get("layer_types")
    if types:
        if not isinstance(types, list):
            raise ConfigError("layer_types", f"must be a list, got {types!r}")
        return "layer_types", [size if kind == "sliding_attention" else 0 for kind in types]
    first = hf.get("max_window_layers", 0)
    if not isinstance(first, int):
        raise ConfigError("max_window_layers", f"must be an integer, got {first!r}")
    return "sliding_window", [size if i >= first else 0 for i in range(layers)]


def _hf_values(hf: dict, extra: dict) -> dict[str, tuple[str, Any]]:
    """``ModelConfig`` field -> (config.json key, value), but for ``layer_windows``; ``extra`` = ``hf[EXTRA_KEY]``."""
    heads = required(hf, "num_attention_heads")

    def ours(name: str, default: Any, key: str | None = None) -> tuple[str, Any]:
        """Our own key, else transformers' ``key`` (if it has one), else ``default``."""
        if name in extra or key is None:
            return f"{EXTRA_KEY}.{name}", extra.get(name, default)
        return key, hf.get(key, default)

    return {
        "vocab_size": ("vocab_size", required(hf, "vocab_size")),
        "hidden_size": ("hidden_size", required(hf, "hidden_size")),
        "num_layers": ("num_hidden_layers", required(hf, "num_hidden_layers")),
        "num_heads": ("num_attention_heads", heads),
        "num_kv_heads": ("num_key_value_heads", hf.get("num_key_value_heads", heads)),
        "intermediate_size": ("intermediate_size", required(hf, "intermediate_size")),
        "max_position_embeddings": ("max_position_embeddings", hf.get("max_position_embeddings", 2048)),
        "rope_theta": ("rope_theta", hf.get("rope_theta", _rope(hf).get("rope_theta", 10000.0))),
        "rms_norm_eps": ("rms_norm_eps", hf.get("rms_norm_eps", 1e-6)),
        "tie_word_embeddings": ("tie_word_embeddings", hf.get("tie_word_embeddings", False)),
        "dropout": ours("dropout", 0.0, "attention_dropout"),
        "init_std": ("initializer_range", hf.get("initializer_range", 0.02)),
        "attention_backend": ours("attention_backend", "auto"),
        "rope_ntk": ours("rope_ntk", "none"),
        "logn_attn": ours("logn_attn", False),
        "train_length": ours("train_length", 0),
    }


def config_from_hf(hf: dict) -> ModelConfig:
    """``ModelConfig`` from a Qwen2-family ``config.json`` (ours or a released one).

    A key that is missing, of the wrong type or out of range (see ``ModelConfig``) raises
    ``ConfigError`` naming it as config.json spells it (``num_hidden_layers``, ``qwen_cli.dropout``).
    """
    extra = _object(hf, EXTRA_KEY)
    values = _hf_values(hf, extra)
    layers = config_from(values).num_layers  # a valid shape before a per-layer list is made from it
    windows = ((f"{EXTRA_KEY}.layer_windows", extra["layer_windows"]) if "layer_windows" in extra
               else _windows_from_hf(hf, layers))
    return config_from({**values, "layer_windows": windows})


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Qwen2 tensor name -> shape for ``config`` (computed on the meta device, no memory)."""
    with torch.device("meta"):
        model = QwenModel(config)
    return {name: tuple(t.shape) for name, t in to_hf_state_dict(model.state_dict(), config).items()}


def model_config(hf: dict, path: Path) -> ModelConfig:
    """``ModelConfig`` from a Qwen2 ``config.json``; UserError for anything our model cannot run."""
    if hf.get("model_type") != MODEL_TYPE:
        raise UserError(f"{path}: model_type {hf.get('model_type')!r} is not {MODEL_TYPE!r}")
    if hf.get("hidden_act", "silu") != "silu":
        raise UserError(f"{path}: hidden_act {hf['hidden_act']!r} is not supported (silu only)")
    return checked_config(hf, path)


def checked_config(hf: dict, path: Path) -> ModelConfig:
    """:func:`config_from_hf` plus the checks every Qwen2-shaped family shares (plain RoPE, head_dim)."""
    try:
        ropes = [_object(hf, "rope_parameters"), _object(hf, "rope_scaling")]
        config = config_from_hf(hf)
    except ConfigError as exc:
        raise UserError(exc.at(str(path))) from None
    for rope in ropes:  # both checked: a config may carry transformers 5's default beside an older key
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise UserError(f"{path}: rope scaling {rope_type!r} is not supported (plain RoPE only)")
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


def write_generation_config(directory: Path, special_ids: dict[str, int]) -> None:
    """Write :func:`generation_config` into a model directory (every chat model gets one)."""
    (Path(directory) / GENERATION_CONFIG_FILE).write_text(json.dumps(generation_config(special_ids), indent=2))

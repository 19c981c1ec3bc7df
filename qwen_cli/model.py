"""The Qwen decoder in one file: config, RMSNorm, rotary embedding, attention, SwiGLU MLP, KV cache.

Architecture (Qwen technical report §2.2, Qwen's released code):
  * untied input embedding and output projection (``tie_word_embeddings`` exists for Qwen2
    checkpoints that tie them);
  * rotary position embedding with fp32 inverse frequencies, applied rotate-half style;
  * bias only on the fused QKV projection;
  * pre-norm RMSNorm (eps 1e-6) before attention and MLP, and once more before the output;
  * SwiGLU MLP: ``down(silu(gate(x)) * up(x))`` with FFN width ≈ 8/3 of hidden.

Parameters are stored fused (``qkv_proj``, ``gate_up_proj``) for speed; ``qwen_cli.hf_format``
maps them to and from the Hugging Face Qwen2 names, so checkpoints load in transformers.

Initialisation: every Linear and the embedding ~ N(0, init_std); the two projections that
write into the residual stream (``o_proj``, ``down_proj``) use init_std / sqrt(2 · layers)
(GPT-2's scaling, so the residual variance does not grow with depth); biases 0, norms 1.

This file holds no parallelism, logging or I/O: those wrap the model from outside.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from kernels.attention import attention

PRESETS: dict[str, dict] = {
    # hidden / heads / layers from the report's Table 1; FFN widths from the released configs
    "qwen-1.8b": dict(hidden_size=2048, num_heads=16, num_layers=24, intermediate_size=5504),
    "qwen-7b": dict(hidden_size=4096, num_heads=32, num_layers=32, intermediate_size=11008),
    "qwen-14b": dict(hidden_size=5120, num_heads=40, num_layers=40, intermediate_size=13696, vocab_size=152064),
}


@dataclass
class ModelConfig:
    """Shape and numerics of a Qwen model (defaults: the official vocabulary, Qwen-7B-like numerics)."""

    vocab_size: int = 151936
    hidden_size: int = 512
    num_layers: int = 8
    num_heads: int = 8
    num_kv_heads: int | None = None  # None = num_heads (Qwen v1); fewer = grouped-query (Qwen2)
    intermediate_size: int = 1376
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    dropout: float = 0.0
    init_std: float = 0.02
    attention_backend: str = "auto"

    def __post_init__(self) -> None:
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head dimension {self.head_dim} must be even for rotary embedding")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def preset(cls, name: str, **overrides) -> ModelConfig:
        if name not in PRESETS:
            raise KeyError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise KeyError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    """x / rms(x) · weight, computed in fp32 and cast back."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * normed.to(x.dtype)


def rotary_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """Inverse frequencies θ^(-2i/d), always fp32 (bf16 frequencies lose long-range positions)."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def rotary_cos_sin(position_ids: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype):
    """cos/sin tables [B, 1, T, D] for the given positions, computed in fp32."""
    angles = position_ids[..., None].float() * inv_freq.to(position_ids.device)
    angles = torch.cat((angles, angles), dim=-1)[:, None]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class KVCache:
    """Preallocated keys/values for incremental decoding: [layers][B, Hkv, max_len, D].

    ``length`` counts the positions already written; all sequences of a batch share it
    (left-pad prompts of different lengths and pass an ``attention_mask``).
    """

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int, device=None, dtype=None) -> None:
        shape = (batch_size, config.num_kv_heads, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)]
        self.length = 0
        self.max_len = max_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write new k/v after the current length; return all keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions requested, capacity {self.max_len}")
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep only (or repeat) the batch rows in ``index``."""
        self.keys = [k.index_select(0, index) for k in self.keys]
        self.values = [v.index_select(0, index) for v in self.values]


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.config, self.layer = config, layer
        kv_dim = config.num_kv_heads * config.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, config.hidden_size + 2 * kv_dim, bias=True)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask, causal, cache: KVCache | None):
        cfg = self.config
        b, t, _ = x.shape
        kv_dim = cfg.num_kv_heads * cfg.head_dim
        q, k, v = self.qkv_proj(x).split((cfg.hidden_size, kv_dim, kv_dim), dim=-1)
        q = q.view(b, t, cfg.num_heads, cfg.head_dim).transpose(1, 2)
        k = k.view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        v = v.view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        dropout_p = cfg.dropout if self.training else 0.0
        out = attention(q, k, v, mask=mask, causal=causal, dropout_p=dropout_p, backend=cfg.attention_backend)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, cfg.hidden_size))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attn = Attention(config, layer)
        self.mlp_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, mask, causal, cache):
        x = x + self.dropout(self.attn(self.attn_norm(x), cos, sin, mask, causal, cache))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


def segment_positions(segment_ids: torch.Tensor) -> torch.Tensor:
    """Positions that restart at 0 wherever the segment id changes along the sequence."""
    t = segment_ids.shape[1]
    idx = torch.arange(t, device=segment_ids.device).expand_as(segment_ids)
    starts = torch.ones_like(segment_ids, dtype=torch.bool)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    start_idx = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values
    return idx - start_idx


def build_mask(t: int, past: int, attention_mask, segment_ids, device) -> torch.Tensor | None:
    """Boolean [B|1, 1, T, past+T] mask (True = may attend), or None for plain causal attention.

    With a cache the mask is always built: torch's CPU SDPA picks a kernel ~100x slower for a
    one-token query when no mask is given.
    """
    if attention_mask is None and segment_ids is None and past == 0:
        return None
    s = past + t
    q_pos = torch.arange(past, s, device=device)[:, None]
    mask = (torch.arange(s, device=device)[None, :] <= q_pos)[None, None]
    if attention_mask is not None:
        mask = mask & attention_mask.bool()[:, None, None, :s]
    if segment_ids is not None:
        if past:
            raise ValueError("segment_ids cannot be combined with a KV cache")
        mask = mask & (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])
    return mask


class QwenModel(nn.Module):
    """Decoder-only Qwen transformer: ``model(input_ids) -> logits [B, T, vocab]``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.register_buffer("inv_freq", rotary_inv_freq(config.head_dim, config.rope_theta), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise all weights as described in the module docstring."""
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.num_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                is_residual = name.endswith(("o_proj", "down_proj"))
                nn.init.normal_(module.weight, mean=0.0, std=residual_std if is_residual else std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        self.inv_freq = rotary_inv_freq(self.config.head_dim, self.config.rope_theta).to(self.inv_freq.device)

    def hidden_states(self, input_ids, position_ids=None, attention_mask=None, segment_ids=None, cache=None):
        """Final-normed hidden states [B, T, hidden] (the input of ``lm_head``)."""
        b, t = input_ids.shape
        past = cache.length if cache is not None else 0
        if position_ids is None:
            if segment_ids is not None:
                position_ids = segment_positions(segment_ids)
            elif attention_mask is not None:  # left padding: count only real tokens
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past : past + t]
            else:
                position_ids = torch.arange(past, past + t, device=input_ids.device).expand(b, t)
        x = self.embed_dropout(self.embed_tokens(input_ids))
        cos, sin = rotary_cos_sin(position_ids, self.inv_freq, x.dtype)
        mask = build_mask(t, past, attention_mask, segment_ids, input_ids.device)
        causal = mask is None
        for block in self.layers:
            x = block(x, cos, sin, mask, causal, cache)
        if cache is not None:
            cache.length += t
        return self.norm(x)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        num_logits_to_keep: int = 0,
    ) -> torch.Tensor:
        """Logits [B, T, vocab]; only the last ``num_logits_to_keep`` positions when > 0."""
        hidden = self.hidden_states(input_ids, position_ids, attention_mask, segment_ids, cache)
        if num_logits_to_keep:
            hidden = hidden[:, -num_logits_to_keep:]
        return self.lm_head(hidden)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            total -= self.embed_tokens.weight.numel()
        return total

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward): 6·N_matmul + 12·layers·hidden·seq (PaLM, app. B).

        N_matmul counts every weight used in a matmul, the output projection included and the
        embedding lookup excluded.
        """
        cfg = self.config
        n_matmul = self.num_parameters(exclude_embeddings=True)
        if cfg.tie_word_embeddings:
            n_matmul += self.lm_head.weight.numel()
        return 6 * n_matmul + 12 * cfg.num_layers * cfg.hidden_size * seq_len

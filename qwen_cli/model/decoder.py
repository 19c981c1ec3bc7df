"""The Qwen decoder: RMSNorm, attention, SwiGLU MLP, blocks and the causal LM.

Architecture (Qwen technical report §2.2, Qwen's released code):
  * untied input embedding and output projection (``tie_word_embeddings`` exists for Qwen2
    checkpoints that tie them);
  * rotary position embedding with fp32 inverse frequencies, applied rotate-half style;
  * bias only on the fused QKV projection;
  * pre-norm RMSNorm (eps 1e-6) before attention and MLP, and once more before the output;
  * SwiGLU MLP: ``down(silu(gate(x)) * up(x))`` with FFN width ≈ 8/3 of hidden.

Parameters are stored fused (``qkv_proj``, ``gate_up_proj``) for speed; ``qwen_cli.interop.qwen2``
maps them to and from the Hugging Face Qwen2 names, so checkpoints load in transformers.

Initialisation: every Linear and the embedding ~ N(0, init_std); the two projections that
write into the residual stream (``o_proj``, ``down_proj``) use init_std / sqrt(2 · layers)
(GPT-2's scaling, so the residual variance does not grow with depth); biases 0, norms 1.

Fused ops (RMSNorm, SwiGLU, rotary embedding, attention) are called from ``qwen_cli.kernels`` with
the backend the config names (``kernels``, ``attention_backend``); each kernel module picks its Triton
or plain-torch path there, so this file has no device or backend branches.

This file holds no parallelism, logging or I/O: those wrap the model from outside.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from qwen_cli.kernels.attention import attention
from qwen_cli.kernels.rms_norm import rms_norm
from qwen_cli.kernels.rope import rotary
from qwen_cli.kernels.swiglu import swiglu
from qwen_cli.model.config import ModelConfig
from qwen_cli.model.kv_cache import KVCache
from qwen_cli.model.masks import build_mask, segment_positions
from qwen_cli.model.rope import logn_scale, rope_theta_for, rotary_cos_sin, rotary_inv_freq


class RMSNorm(nn.Module):
    """x / rms(x) · weight, computed in fp32 and cast back (``qwen_cli.kernels.rms_norm``)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.weight = nn.Parameter(torch.ones(config.hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.config.rms_norm_eps, self.config.kernels)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.config, self.layer = config, layer
        self.window = config.layer_windows[layer] if config.layer_windows else 0  # 0 = full attention
        kv_dim = config.num_kv_heads * config.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, config.hidden_size + 2 * kv_dim, bias=True)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask, causal, cache: KVCache | None, logn=None, segments=None):
        cfg = self.config
        b, t, _ = x.shape
        kv_dim = cfg.num_kv_heads * cfg.head_dim
        q, k, v = self.qkv_proj(x).split((cfg.hidden_size, kv_dim, kv_dim), dim=-1)
        q = q.view(b, t, cfg.num_heads, cfg.head_dim).transpose(1, 2)
        k = k.view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        v = v.view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        q, k = rotary(q, cos, sin, cfg.kernels), rotary(k, cos, sin, cfg.kernels)
        if logn is not None:
            q = q * logn.to(q.dtype)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        dropout_p = cfg.dropout if self.training else 0.0
        out = attention(q, k, v, mask=mask, causal=causal, dropout_p=dropout_p, backend=cfg.attention_backend,
                        window=self.window, segments=segments)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, cfg.hidden_size))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(swiglu(self.gate_up_proj(x), self.config.kernels))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config)
        self.attn = Attention(config, layer)
        self.mlp_norm = RMSNorm(config)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, mask, causal, cache, logn=None, segments=None):
        x = x + self.dropout(self.attn(self.attn_norm(x), cos, sin, mask, causal, cache, logn, segments))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


class QwenModel(nn.Module):
    """Decoder-only Qwen transformer: ``model(input_ids) -> logits [B, T, vocab]``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config)
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

    def append_layers(self, count: int) -> None:
        """``count`` more blocks after the last, each starting as the identity: initialised as
        :meth:`reset_parameters` does, except that the two projections writing into the residual stream
        (``o_proj``, ``down_proj``) are zero, so the model computes exactly what it did until training
        moves them. For a reward model that must compute more than the model it starts from."""
        first = self.config.num_layers
        windows = [*self.config.layer_windows, *[0] * count] if self.config.layer_windows else []
        self.config.__dict__.update(replace(self.config, num_layers=first + count, layer_windows=windows).__dict__)
        reference = self.embed_tokens.weight
        for layer in range(first, first + count):
            block = Block(self.config, layer).to(device=reference.device, dtype=reference.dtype)
            for name, module in block.named_modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
                    if name.endswith(("o_proj", "down_proj")):
                        nn.init.zeros_(module.weight)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
            self.layers.append(block)

    def _apply(self, fn, recurse: bool = True):
        """``.to()``, ``.cuda()``, ``.bfloat16()`` … move RoPE's inverse frequencies but never round
        them: they stay fp32 whatever the weights' dtype (a bf16 copy shifts every rotation)."""
        super()._apply(fn, recurse)
        if self.inv_freq.dtype != torch.float32:
            self.inv_freq = rotary_inv_freq(self.config.head_dim, self.config.rope_theta).to(self.inv_freq.device)
        return self

    def set_context_extension(self, rope_ntk: str = "none", logn_attn: bool = False,
                              layer_windows: list[int] | None = None, train_length: int | None = None) -> None:
        """Switch the inference-time context-extension techniques (report §2.5) on or off in place."""
        cfg = replace(self.config, rope_ntk=rope_ntk, logn_attn=logn_attn, layer_windows=list(layer_windows or []),
                      train_length=self.config.train_length if train_length is None else train_length)
        self.config.__dict__.update(cfg.__dict__)  # shared with every layer
        for block in self.layers:
            block.attn.window = cfg.layer_windows[block.attn.layer] if cfg.layer_windows else 0

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
        inv_freq, logn = self._extension(position_ids)
        if cache is not None:
            cache.record_positions(position_ids)
            cache.rerotate(inv_freq)
        cos, sin = rotary_cos_sin(position_ids, inv_freq, x.dtype)
        mask = build_mask(t, past, attention_mask, segment_ids, input_ids.device)
        causal = mask is None
        segments = segment_ids if attention_mask is None else None  # lets flash-attn skip the mask
        for block in self.layers:
            x = block(x, cos, sin, mask, causal, cache, logn, segments)
        if cache is not None:
            cache.length += t
        return self.norm(x)

    def _extension(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Rotary frequencies and LogN query factors for this forward (inference-time context extension).

        The sequence length L of dynamic NTK is the furthest position so far + 1 (with a KV cache,
        the cached tokens count), so prefill, decode and a full recompute agree.
        """
        cfg = self.config
        if self.training or not (cfg.rope_ntk != "none" or cfg.logn_attn):
            return self.inv_freq, None
        trained = cfg.trained_context
        inv_freq = self.inv_freq
        if cfg.rope_ntk != "none":
            length = int(position_ids.max()) + 1
            theta = rope_theta_for(cfg.rope_theta, cfg.head_dim, cfg.rope_ntk, length, trained)
            if theta != cfg.rope_theta:
                inv_freq = rotary_inv_freq(cfg.head_dim, theta).to(self.inv_freq.device)
        return inv_freq, logn_scale(position_ids, trained) if cfg.logn_attn else None

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

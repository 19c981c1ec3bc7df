"""Shape and numerics of a Qwen model (``ModelConfig``) and the report's size presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

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

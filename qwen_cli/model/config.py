"""Shape and numerics of a Qwen model (``ModelConfig``) and the report's size presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

ROPE_NTK = ("none", "dynamic", "continuous")

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
    # inference-time context extension (report §2.5; qwen_cli.model.rope): all off = plain RoPE
    rope_ntk: str = "none"  # "dynamic": Qwen's bucketed NTK-aware base; "continuous": base·(L/T)^(d/(d-2))
    logn_attn: bool = False  # queries past train_length scaled by log(i)/log(train_length)
    layer_windows: list[int] = field(default_factory=list)  # per-layer attention window, 0 = full; [] = all full
    train_length: int = 0  # the context the model was trained at (T); 0 = max_position_embeddings

    def __post_init__(self) -> None:
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        if self.rope_ntk not in ROPE_NTK:
            raise ValueError(f"rope_ntk {self.rope_ntk!r} is not one of {', '.join(ROPE_NTK)}")
        if self.layer_windows and len(self.layer_windows) != self.num_layers:
            raise ValueError(f"layer_windows has {len(self.layer_windows)} entries for {self.num_layers} layers")
        if any(w < 0 for w in self.layer_windows):
            raise ValueError(f"layer_windows {self.layer_windows}: windows must be >= 0 (0 = full attention)")
        if self.train_length < 0:
            raise ValueError(f"train_length {self.train_length} must be >= 0")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head dimension {self.head_dim} must be even for rotary embedding")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def trained_context(self) -> int:
        """T of the context-extension formulas: ``train_length``, else ``max_position_embeddings``."""
        return self.train_length or self.max_position_embeddings

    @property
    def extends_context(self) -> bool:
        """Whether any context-extension technique is switched on."""
        return self.rope_ntk != "none" or self.logn_attn or any(self.layer_windows)

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

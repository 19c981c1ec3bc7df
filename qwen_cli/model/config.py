"""Shape and numerics of a Qwen model (``ModelConfig``) and the report's size presets.

A ``ModelConfig`` checks itself when made: every field's type and range, the shape's divisibility
rules and a size bound (:data:`MAX_PARAMETERS`, counted from the config before any tensor exists).
A violation is a :class:`ConfigError` naming the field, which readers of recipes and
``config.json`` files re-spell as their own key.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from qwen_cli.kernels.attention import BACKENDS as ATTENTION_BACKENDS
from qwen_cli.kernels.dispatch import KERNELS

ROPE_NTK = ("none", "dynamic", "continuous")
MAX_PARAMETERS = 10**12  # a larger config is a typo or a damaged file: refused before allocating anything

PRESETS: dict[str, dict] = {
    # hidden / heads / layers from the report's Table 1; FFN widths from the released configs
    "qwen-1.8b": dict(hidden_size=2048, num_heads=16, num_layers=24, intermediate_size=5504),
    "qwen-7b": dict(hidden_size=4096, num_heads=32, num_layers=32, intermediate_size=11008),
    "qwen-14b": dict(hidden_size=5120, num_heads=40, num_layers=40, intermediate_size=13696, vocab_size=152064),
}


@dataclass(frozen=True)
class Range:
    """An interval of finite numbers; ``str`` states it as a rule (``>= 1``, ``> 0``, ``in [0, 1)``)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # ``low`` itself is excluded
    high_open: bool = False  # ``high`` itself is excluded

    def __contains__(self, value: float) -> bool:
        if not _finite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def violation(self, value: float) -> str | None:
        """``None`` when ``value`` lies in the range, else what is wrong (``must be >= 1, got 0``)."""
        if value in self:
            return None
        return f"must be {'' if _finite(value) else 'finite and '}{self}, got {reprlib.repr(value)}"


def _finite(value: float) -> bool:
    """Whether ``value`` is a finite number (any int is, however large)."""
    return not isinstance(value, float) or math.isfinite(value)


POSITIVE = Range(1)
NON_NEGATIVE = Range(0)
ABOVE_ZERO = Range(0, low_open=True)

# field -> (type, range); float fields also take an int (stored as a float), no field takes a bool
# unless its type is bool
FIELD_RULES: dict[str, tuple[type, Range | None]] = {
    "vocab_size": (int, POSITIVE),
    "hidden_size": (int, POSITIVE),
    "num_layers": (int, POSITIVE),
    "num_heads": (int, POSITIVE),
    "num_kv_heads": (int, POSITIVE),
    "intermediate_size": (int, POSITIVE),
    "max_position_embeddings": (int, POSITIVE),
    "rope_theta": (float, ABOVE_ZERO),
    "rms_norm_eps": (float, ABOVE_ZERO),
    "tie_word_embeddings": (bool, None),
    "dropout": (float, Range(0, 1, high_open=True)),
    "init_std": (float, NON_NEGATIVE),
    "attention_backend": (str, None),
    "kernels": (str, None),
    "rope_ntk": (str, None),
    "logn_attn": (bool, None),
    "layer_windows": (list, None),
    "train_length": (int, NON_NEGATIVE),
}
CHOICES = {"attention_backend": ATTENTION_BACKENDS, "kernels": KERNELS, "rope_ntk": ROPE_NTK}
TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list"}


class ConfigError(ValueError):
    """A key with a wrong type or value (a ``ModelConfig`` field, a recipe or ``config.json`` key) and
    what is wrong with it (``must be >= 1, got 0``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key} {message}")
        self.key, self.message = key, message

    def at(self, where: str, prefix: str = "") -> str:
        """One line for the user: ``where`` the key was set (a file, a ``--set``) and ``prefix + key``."""
        return f"{where}: '{prefix}{self.key}' {self.message}"


def required(source: Mapping, key: str) -> Any:
    """``source[key]``, or a ``ConfigError`` saying it is missing."""
    if key not in source:
        raise ConfigError(key, "is missing")
    return source[key]


def config_from(values: Mapping[str, tuple[str, Any]]) -> ModelConfig:
    """``ModelConfig`` from field -> (the source's key for it, value); a ``ConfigError`` names the source's key."""
    try:
        return ModelConfig(**{name: value for name, (_, value) in values.items()})
    except ConfigError as exc:
        raise ConfigError(values[exc.key][0] if exc.key in values else exc.key, exc.message) from None


def _typed(key: str, value: Any, tp: type) -> Any:
    """``value`` if it is of type ``tp`` (an int where a float is expected becomes a float)."""
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value) if abs(value) < 1e300 else (math.inf if value > 0 else -math.inf)
    if not isinstance(value, tp) or (tp in (int, float) and isinstance(value, bool)):
        raise ConfigError(key, f"must be {TYPE_NAMES[tp]}, got {reprlib.repr(value)}")
    return value


def _check_field(key: str, value: Any) -> Any:
    """``value`` checked (and normalised) against the field's rules."""
    tp, allowed = FIELD_RULES[key]
    value = _typed(key, value, tp)
    problem = allowed.violation(value) if allowed is not None else None
    if problem is None and key in CHOICES and value not in CHOICES[key]:
        problem = f"must be one of {', '.join(CHOICES[key])}, got {value!r}"
    if problem is None and key == "layer_windows":
        bad = [w for w in value if isinstance(w, bool) or not isinstance(w, int) or w < 0]
        if bad:
            problem = f"entries must be integers >= 0 (0 = full attention), got {reprlib.repr(bad[0])}"
    if problem is not None:
        raise ConfigError(key, problem)
    return value


def _magnitude(count: int) -> str:
    """``count`` to three digits (``3.04e+14``), without converting an int too large for a float."""
    return f"{count:.3g}" if count.bit_length() < 1000 else f"~1e{int(count.bit_length() * math.log10(2))}"


@dataclass
class ModelConfig:
    """Shape and numerics of a Qwen model (defaults: the official vocabulary, Qwen-7B-like numerics).

    Checked when made (see the module docstring): a ``ConfigError`` names the first field at fault.
    """

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
    kernels: str = "auto"  # RMSNorm/SwiGLU/RoPE: "auto" (Triton on CUDA when installed) | "triton" | "torch"
    # inference-time context extension (report §2.5; qwen_cli.model.rope): all off = plain RoPE
    rope_ntk: str = "none"  # "dynamic": Qwen's bucketed NTK-aware base; "continuous": base·(L/T)^(d/(d-2))
    logn_attn: bool = False  # queries past train_length scaled by log(i)/log(train_length)
    layer_windows: list[int] = field(default_factory=list)  # per-layer attention window, 0 = full; [] = all full
    train_length: int = 0  # the context the model was trained at (T); 0 = max_position_embeddings

    def __post_init__(self) -> None:
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        for f in fields(self):
            setattr(self, f.name, _check_field(f.name, getattr(self, f.name)))
        self._check_shape()

    def _check_shape(self) -> None:
        """The rules between fields, then the size bound."""
        if self.layer_windows and len(self.layer_windows) != self.num_layers:
            raise ConfigError("layer_windows", f"must have one entry per layer ({self.num_layers}), "
                                               f"got {len(self.layer_windows)}")
        if self.hidden_size % self.num_heads:
            raise ConfigError("num_heads", f"must divide hidden_size {self.hidden_size}, got {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError("num_kv_heads", f"must divide the {self.num_heads} attention heads, "
                                              f"got {self.num_kv_heads}")
        if self.head_dim % 2:
            raise ConfigError("num_heads", f"must give an even head dimension (hidden_size / heads, for rotary "
                                           f"embedding), got {self.num_heads} (head dimension {self.head_dim})")
        if self.num_parameters > MAX_PARAMETERS:  # named after the largest size, the likeliest culprit
            largest = max(("vocab_size", "hidden_size", "num_layers", "intermediate_size"),
                          key=lambda name: getattr(self, name))
            size, count = reprlib.repr(getattr(self, largest)), _magnitude(self.num_parameters)
            raise ConfigError(largest, f"must keep the model under {MAX_PARAMETERS:.0e} parameters, "
                                       f"got {size} ({count} parameters)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_parameters(self) -> int:
        """Parameters of a ``QwenModel`` of this config (a tied output projection counted once)."""
        hidden, qkv = self.hidden_size, self.hidden_size + 2 * self.num_kv_heads * self.head_dim
        block = hidden * qkv + qkv + hidden * hidden + 3 * hidden * self.intermediate_size + 2 * hidden
        embeddings = self.vocab_size * hidden * (1 if self.tie_word_embeddings else 2)
        return embeddings + self.num_layers * block + hidden

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

"""Recipes: TOML files with typed sections, ``--set section.key=value`` overrides, exact errors.

A recipe is data: every number of a run (the paper's included) lives in a TOML file under
``recipes/``; the code only has neutral defaults. Each top-level table is a *section* parsed
into a dataclass. The base sections (shared by every stage) are

    model         preset or explicit shape fields (-> ``ModelConfig``)
    data          token shards and sequence length
    optim         AdamW hyper-parameters, weight decay, clipping
    schedule      warm-up then cosine (or constant) decay to ``min_lr_ratio`` of the peak
    train         global token batch, micro batch, length, dtype, seed, validation, compile
    checkpoint    how often and how many checkpoints to keep
    logging       console/metrics cadence
    distributed   FSDP2 options under ``torchrun``
    init          start from an existing checkpoint directory (SFT, specialisation)

A stage adds or replaces sections by passing its own mapping, e.g.
``load_recipe(path, sections={**BASE_SECTIONS, "data": ChatData, "lora": LoraSection})``.

Overrides are ``section.key=value`` where ``value`` is read as a TOML value (``3e-4``,
``true``, ``[0.9, 0.95]``, ``"text"``); anything that is not valid TOML is taken as a bare
string, so ``--set data.shards=runs/tiny/shards`` needs no quotes. Paths in recipes are
relative to the current directory (where ``qwen`` runs), not to the recipe file.

Every value is checked when the recipe is read, before anything runs: its type, its range (fields
made with :func:`ranged`: sizes >= 1, ``optim.lr`` finite and > 0, ``0 <= dropout < 1`` ...) and a
section's own ``check()`` (rules between its keys: ``[model]`` must make a valid ``ModelConfig``).
Errors (unknown section or key, wrong type, value out of range, unreadable file) raise ``UserError``
with one line naming where the value was set (the file or the ``--set``) and the key and, for
typos, a did-you-mean suggestion.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from qwen_cli.errors import UserError
from qwen_cli.model import PRESETS, ModelConfig
from qwen_cli.model.config import ABOVE_ZERO, NON_NEGATIVE, POSITIVE, ConfigError, Range

RANGE = "range"  # field metadata key of ``ranged``
FRACTION = Range(0, 1, high_open=True)  # [0, 1)


def ranged(default: Any, allowed: Range) -> Any:
    """A section field whose value (every entry, for a list) must lie in ``allowed``; checked on reading."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={RANGE: allowed})
    return field(default=default, metadata={RANGE: allowed})


@dataclass
class ModelSection:
    """Model shape: a ``preset`` (qwen-1.8b|qwen-7b|qwen-14b) and/or explicit ``ModelConfig`` fields.

    Unset fields come from the preset, else from ``ModelConfig``'s defaults; an unset
    ``vocab_size`` (in the recipe and the preset) is the tokenizer's padded vocabulary size.
    """

    preset: str | None = None
    vocab_size: int | None = None
    hidden_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    intermediate_size: int | None = None
    max_position_embeddings: int | None = None
    rope_theta: float | None = None
    rms_norm_eps: float | None = None
    tie_word_embeddings: bool | None = None
    dropout: float | None = None
    init_std: float | None = None
    attention_backend: Literal["auto", "sdpa", "eager", "flash"] | None = None
    kernels: Literal["auto", "triton", "torch"] | None = None  # fused RMSNorm/SwiGLU/RoPE/cross-entropy
    rope_ntk: Literal["none", "dynamic", "continuous"] | None = None
    logn_attn: bool | None = None
    layer_windows: list[int] | None = None
    train_length: int | None = None

    def check(self) -> None:
        """The shape must make a valid ``ModelConfig`` (an unset vocabulary stands in as one token)."""
        self._config(vocab_size=1)

    def to_config(self, vocab_size: int | None = None) -> ModelConfig:
        """The ``ModelConfig`` (``vocab_size`` fills in when the recipe leaves it unset)."""
        try:
            return self._config(vocab_size)
        except ConfigError as exc:
            raise UserError(exc.at("[model]", "model.")) from None

    def _config(self, vocab_size: int | None) -> ModelConfig:
        """``to_config`` raising ``ConfigError`` (the key and what is wrong) for an invalid shape."""
        if self.preset is not None and self.preset not in PRESETS:
            raise ConfigError("preset", f"must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        explicit = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "preset"}
        explicit = {k: v for k, v in explicit.items() if v is not None}
        preset_fields = PRESETS[self.preset] if self.preset is not None else {}
        if "vocab_size" not in explicit and "vocab_size" not in preset_fields and vocab_size is not None:
            explicit["vocab_size"] = vocab_size
        if self.preset is not None:
            return ModelConfig.preset(self.preset, **explicit)
        return ModelConfig(**explicit)


@dataclass
class WeightedShards:
    """One source of a data mixture: a shard directory and its share of the training sequences."""

    shards: str = ""
    weight: float = 1.0


@dataclass
class DataSection:
    """Token shards written by ``qwen tokenize encode`` and the training sequence length.

    Either one directory (``shards = "DIR"``) or a mixture: ``sources = [{shards = "code",
    weight = 0.7}, {shards = "text", weight = 0.3}]`` draws sequences from each in proportion to
    the weights (see ``qwen_cli.data.shards.MixedBatches``).
    """

    shards: str = ""
    sources: list[WeightedShards] = field(default_factory=list)
    seq_len: int = ranged(2048, POSITIVE)


@dataclass
class OptimSection:
    """AdamW. Weight decay applies to matrices and embeddings, never to biases or norm gains."""

    lr: float = ranged(3e-4, ABOVE_ZERO)
    betas: list[float] = ranged([0.9, 0.95], FRACTION)
    eps: float = ranged(1e-8, ABOVE_ZERO)
    weight_decay: float = ranged(0.1, NON_NEGATIVE)
    grad_clip: float = ranged(1.0, NON_NEGATIVE)  # max global gradient L2 norm; 0 disables clipping
    fused: bool = True  # fused AdamW kernel when the device supports it

    def check(self) -> None:
        """Two betas: the decay rates of the first and second moment estimates."""
        if len(self.betas) != 2:
            raise ConfigError("betas", f"must have two entries, got {toml_value(self.betas)}")


@dataclass
class ScheduleSection:
    """Linear warm-up over ``warmup_steps`` (or ``warmup_ratio`` of all steps), then decay."""

    warmup_steps: int = ranged(0, NON_NEGATIVE)
    warmup_ratio: float = ranged(0.0, FRACTION)
    decay: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = ranged(0.1, Range(0, 1))  # the final learning rate as a fraction of the peak


@dataclass
class TrainSection:
    """Length and shape of the run. ``batch_tokens`` is global (all ranks, all micro steps)."""

    batch_tokens: int = ranged(4_194_304, POSITIVE)
    micro_batch_size: int = ranged(1, POSITIVE)  # sequences per rank per forward/backward
    steps: int = ranged(0, NON_NEGATIVE)  # optimizer steps; 0 = tokens // batch_tokens
    tokens: int = ranged(0, NON_NEGATIVE)  # total training tokens (used when steps = 0)
    dtype: Literal["float32", "bfloat16"] = "bfloat16"  # autocast dtype; master weights stay fp32
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = ranged(1234, NON_NEGATIVE)
    compile: bool = False  # torch.compile each transformer block
    # which blocks recompute their forward in backward (train.activation_checkpoint): none, full, selective (every 2nd)
    activation_checkpointing: Literal["none", "full", "selective"] = "none"
    # tokens per chunk of the fused output-projection + cross-entropy; 0 = measured on CUDA, sized from the vocabulary elsewhere
    loss_chunk_tokens: int = ranged(4096, NON_NEGATIVE)
    val_every: int = ranged(0, NON_NEGATIVE)  # steps between validation passes; 0 = only at the end
    # held-out micro batches per validation, all ranks together (pretrain: per source; SFT: of the chat rows),
    # rounded down to a multiple of the world size: the same global set for any world size dividing it
    val_batches: int = ranged(8, NON_NEGATIVE)
    peak_flops: float = ranged(0.0, NON_NEGATIVE)  # per-device peak FLOP/s for MFU; 0 = measure a matmul at start


@dataclass
class CheckpointSection:
    """Checkpoints under ``OUT/checkpoints/step_NNNNNN``; ``every`` = 0 saves only at the end."""

    every: int = ranged(0, NON_NEGATIVE)
    keep_last: int = ranged(3, NON_NEGATIVE)  # 0 keeps every checkpoint
    async_save: bool = False  # multi-process runs: write the DCP shards in the background while training goes on


@dataclass
class LoggingSection:
    """Console and ``metrics.jsonl`` cadence."""

    log_every: int = ranged(1, POSITIVE)
    progress: Literal["auto", "rich", "plain", "none"] = "auto"


@dataclass
class DistributedSection:
    """FSDP2 options when launched with ``torchrun`` (ignored in a single process)."""

    backend: Literal["auto", "gloo", "nccl"] = "auto"
    reshard_after_forward: bool = True


@dataclass
class InitSection:
    """Start from an existing checkpoint directory instead of random weights."""

    checkpoint: str = ""


BASE_SECTIONS: dict[str, type] = {
    "model": ModelSection,
    "data": DataSection,
    "optim": OptimSection,
    "schedule": ScheduleSection,
    "train": TrainSection,
    "checkpoint": CheckpointSection,
    "logging": LoggingSection,
    "distributed": DistributedSection,
    "init": InitSection,
}


class Recipe:
    """Parsed sections by name (``recipe.train.seed``) plus the file they came from."""

    def __init__(self, sections: dict[str, Any], source: str = "<recipe>") -> None:
        self.sections = sections
        self.source = source

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"recipe has no section {name!r}")

    def with_section(self, name: str, section: Any) -> Recipe:
        """A copy with section ``name`` replaced (the original is left as it was)."""
        return Recipe({**self.sections, name: section}, self.source)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict; ``None`` values (unset) are left out."""
        out = {}
        for name, section in self.sections.items():
            values = {k: v for k, v in dataclasses.asdict(section).items() if v is not None}
            out[name] = values
        return out

    def to_toml(self) -> str:
        """The resolved recipe as TOML text; loading it back gives an equal recipe."""
        lines = [f"# resolved recipe (from {self.source})"]
        for name, values in self.to_dict().items():
            lines.append(f"\n[{name}]")
            lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
        return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """One scalar or list as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {toml_value(v)}" for key, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _suggest(word: str, options, prefix: str = "") -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "{" + ", ".join(f"{f.name} = {_type_name(typing.get_type_hints(tp)[f.name])}" for f in fields(tp)) + "}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """(ok, value converted to ``tp``); ints are accepted where floats are expected.

    A dataclass type takes a table with only its own keys (each coerced); the value is then
    the dataclass, or the first offending key's message when it does not fit.
    """
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _coerce_table(value, tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is not type(None):
                ok, out = _coerce(value, arg)
                if ok:
                    return True, out
        return False, value
    if origin is Literal:
        return value in typing.get_args(tp), value
    if origin is list:
        if not isinstance(value, list):
            return False, value
        (item_tp,) = typing.get_args(tp)
        converted = [_coerce(v, item_tp) for v in value]
        return all(ok for ok, _ in converted), [v for _, v in converted]
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is dict:
        return isinstance(value, dict), value
    return isinstance(value, tp), value


def _coerce_table(value: Any, cls: type) -> tuple[bool, Any]:
    if not isinstance(value, dict):
        return False, value
    hints, known = typing.get_type_hints(cls), {f.name for f in fields(cls)}
    kwargs = {}
    for key, item in value.items():
        if key not in known:
            return False, value
        ok, kwargs[key] = _coerce(item, hints[key])
        if not ok:
            return False, value
    return True, cls(**kwargs)


def _build_section(cls: type, name: str, values: dict[str, tuple[Any, str]], source: str) -> Any:
    """Section ``name`` from ``values`` (key -> (value, where it was set)), type- and range-checked.

    Errors name where the offending key was set: the recipe file (``source``, also for defaults)
    or the ``--set`` that set it.
    """
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    kwargs = {}
    for key, (value, where) in values.items():
        if key not in known:
            raise UserError(f"{where}: unknown key '{name}.{key}'{_suggest(key, known, name + '.')}")
        ok, converted = _coerce(value, hints[key])
        if not ok:
            raise UserError(
                f"{where}: '{name}.{key}' must be {_type_name(hints[key])}, got {toml_value_safe(value)}"
            )
        kwargs[key] = converted
    section = cls(**kwargs)
    try:
        _check_ranges(section)
        if hasattr(section, "check"):
            section.check()
    except ConfigError as exc:
        raise UserError(exc.at(values.get(exc.key, (None, source))[1], f"{name}.")) from None
    return section


def _check_ranges(section: Any) -> None:
    """``ConfigError`` for the first field (or list entry) of ``section`` outside its ``ranged`` range."""
    for f in fields(section):
        allowed, value = f.metadata.get(RANGE), getattr(section, f.name)
        if allowed is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            problem = allowed.violation(item)
            if problem is not None:
                raise ConfigError(f.name, f"entries {problem}" if isinstance(value, list) else problem)


def toml_value_safe(value: Any) -> str:
    try:
        return toml_value(value)
    except TypeError:
        return repr(value)


def parse_override(text: str) -> tuple[str, str, Any]:
    """``section.key=value`` -> (section, key, value); the value is TOML or else a bare string."""
    if "=" not in text:
        raise UserError(f"--set {text}: expected section.key=value")
    dotted, raw = text.split("=", 1)
    parts = dotted.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise UserError(f"--set {text}: the key must be section.key (e.g. train.seed)")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return parts[0], parts[1], value


def read_toml(path: Path) -> dict:
    """The parsed TOML file, or a one-line UserError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: recipe file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read recipe ({exc})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: invalid TOML ({exc})") from None


def build_recipe(
    data: dict, source: str = "<recipe>", overrides: typing.Sequence[str] = (),
    sections: dict[str, type] | None = None,
) -> Recipe:
    """Typed recipe from a parsed TOML mapping plus ``--set`` overrides."""
    sections = BASE_SECTIONS if sections is None else sections
    merged: dict[str, dict[str, tuple[Any, str]]] = {name: {} for name in sections}
    for name, values in data.items():
        if name not in sections:
            raise UserError(f"{source}: unknown section [{name}]{_suggest(name, sections)}")
        if not isinstance(values, dict):
            raise UserError(f"{source}: '{name}' must be a table ([{name}]), got {toml_value_safe(values)}")
        merged[name] = {key: (value, source) for key, value in values.items()}
    for text in overrides:
        name, key, value = parse_override(text)
        if name not in sections:
            raise UserError(f"--set {text}: unknown section '{name}'{_suggest(name, sections)}")
        merged[name][key] = (value, f"--set {text}")
    return Recipe({name: _build_section(cls, name, merged[name], source) for name, cls in sections.items()}, source)


def load_recipe(
    path: str | Path, overrides: typing.Sequence[str] = (), sections: dict[str, type] | None = None
) -> Recipe:
    """Read ``path`` (TOML), apply ``--set`` overrides, and type-check every key."""
    path = Path(path)
    return build_recipe(read_toml(path), str(path), overrides, sections)

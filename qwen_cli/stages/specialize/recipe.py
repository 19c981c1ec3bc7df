"""The ``qwen specialize`` recipe: data builders, then ordered training stages, planned up front.

Layout (a TOML file; every table below is checked like any recipe section)::

    [specialize]   kind = "code" | "math", base = the base model directory
    [code]         code corpus inputs, held-out share, instruction kinds     (kind = "code")
    [math]         generator modules, problems per module, held-out share    (kind = "math")
    [decontaminate] n-gram length, benchmarks, optional --data-dir style folder
    [evaluate]     what the run measures at the end (held-out perplexity / exact match)
    [defaults.SECTION]   values every stage starts from (e.g. [defaults.train] device = "cpu")
    [[stage]]      name, kind = "pretrain" | "sft", then that stage's own sections:
    [stage.data] ... [stage.optim] ... [stage.schedule] ...  (the recipe sections of qwen pretrain / qwen sft)

Stages run in file order; stage k starts from stage k-1's final model (the first from ``base``),
so ``init.checkpoint`` is set by the plan and may not be given. A data value ``"@NAME"`` names a
data set the builders make in the run directory: ``@code`` (token shards of the decontaminated
code corpus), ``@implement`` / ``@explain`` (instruction JSONL), ``@math`` (math Q/A JSONL).

``--set`` takes ``section.key=value`` for the top-level sections, ``STAGE.section.key=value`` for
one stage and ``defaults.section.key=value`` for all of them.

**Context growth.** When a stage's ``data.seq_len`` exceeds the context its starting model was
trained at (``train_length``, else ``max_position_embeddings``), the stage starts from a copy of
that model whose config says ``max_position_embeddings = train_length = seq_len``; the weights and
the RoPE base stay, so the copy gives the starting model's logits on every input the starting
model was trained for, and inference-time extension (dynamic NTK, LogN) then counts from the
new, really trained length instead of switching on inside it (which validation, run in eval
mode, would otherwise do).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from qwen_cli.checkpoint.model_dir import read_config
from qwen_cli.errors import UserError
from qwen_cli.model import ModelConfig
from qwen_cli.model.config import POSITIVE, Range
from qwen_cli.recipe import FRACTION, InitSection, Recipe, build_recipe, ranged, read_toml
from qwen_cli.stages import pretrain, sft

STAGE_SECTIONS: dict[str, dict[str, type]] = {"pretrain": pretrain.SECTIONS, "sft": sft.SECTIONS}
STAGE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
DATA = "data"  # the run directory's folder for built data sets
INIT = "init"  # grown copies of a stage's starting model
STAGES = "stages"  # one trainer run directory per stage


@dataclass
class SpecializeSection:
    """What to specialise: ``kind`` (must match the subcommand) and the base model directory."""

    kind: Literal["code", "math"] = "code"
    base: str = ""


@dataclass
class CodeSection:
    """The code corpus (files, folders, JSONL, ``stdlib:PATH``, ``package:NAME``) and what is built from it."""

    inputs: list[str] = field(default_factory=list)
    text_field: str = "text"
    heldout_fraction: float = ranged(0.05, FRACTION)  # documents kept out of training, for perplexity
    val_fraction: float = ranged(0.02, FRACTION)  # of the training documents, validation during training
    instructions: list[Literal["implement", "explain"]] = field(default_factory=lambda: ["implement", "explain"])
    max_instruction_chars: int = ranged(2000, POSITIVE)
    seed: int = ranged(0, Range(0))


@dataclass
class MathSection:
    """Math Q/A from DeepMind's mathematics-dataset generator (empty ``modules``: all of them)."""

    modules: list[str] = field(default_factory=list)
    per_module: int = ranged(1000, POSITIVE)
    level: Literal["easy", "medium", "hard"] = "easy"
    heldout_fraction: float = ranged(0.1, FRACTION)
    seed: int = ranged(0, Range(0))


@dataclass
class DecontaminateSection:
    """Drop training documents sharing an ``ngram``-word n-gram with these benchmarks' test items."""

    ngram: int = ranged(13, POSITIVE)
    benchmarks: list[Literal["humaneval", "mbpp", "gsm8k", "math"]] = field(
        default_factory=lambda: ["humaneval", "mbpp", "gsm8k", "math"])
    data_dir: str = ""  # DIR/<benchmark>/test.jsonl first, as `qwen eval --data-dir`; else the data packages


@dataclass
class EvaluateSection:
    """The measurements written to the run's manifest after the last stage."""

    baseline: str = ""  # another model to score beside base and specialist (e.g. the general chat model)
    lengths: list[int] = ranged([], POSITIVE)  # code: perplexity at these lengths (default: the longest seq_len)
    code_windows: int = ranged(64, Range(0))  # code: held-out windows per length (0: skip)
    math_items: int = ranged(500, Range(0))  # math: held-out questions scored (0: skip)
    max_new_tokens: int = ranged(32, POSITIVE)
    batch_size: int = ranged(16, POSITIVE)
    temperature: float = ranged(0.0, Range(0))  # 0: greedy, as the report evaluates


TOP_SECTIONS: dict[str, type] = {"specialize": SpecializeSection, "code": CodeSection, "math": MathSection,
                                 "decontaminate": DecontaminateSection, "evaluate": EvaluateSection}


@dataclass
class StagePlan:
    """One training stage: its typed recipe (init and @-data resolved) and where it starts and ends."""

    name: str
    kind: str
    recipe: Recipe
    run_dir: Path
    source: Path  # the model it starts from (base or the previous stage's final)
    grown: ModelConfig | None  # when set, ``recipe.init.checkpoint`` is a copy of ``source`` with this config

    @property
    def init_dir(self) -> Path:
        return Path(self.recipe.init.checkpoint)

    @property
    def final_dir(self) -> Path:
        return self.run_dir / "final"


@dataclass
class Plan:
    """The whole run: the top-level sections and the stages in order."""

    path: Path
    top: Recipe
    stages: list[StagePlan]
    data_names: dict[str, Path]  # @NAME -> the file or directory the builders write


def data_names(kind: str, run_dir: Path, top: Recipe) -> dict[str, Path]:
    """What ``@NAME`` means in this run (see the module docstring)."""
    data = run_dir / DATA
    if kind == "code":
        return {"code": data / "code_shards",
                **{name: data / f"{name}.jsonl" for name in top.code.instructions}}
    return {"math": data / "math_train.jsonl"}


def grown_config(config: ModelConfig, seq_len: int) -> ModelConfig | None:
    """The config of the starting model for a stage at ``seq_len`` (None: no growth needed)."""
    if seq_len <= config.trained_context and seq_len <= config.max_position_embeddings:
        return None
    length = max(seq_len, config.trained_context)
    return replace(config, max_position_embeddings=max(length, config.max_position_embeddings), train_length=length)


def _split_overrides(overrides: list[str], stage_names: list[str]) -> tuple[list[str], dict[str, list[tuple[str, str]]]]:
    """(top-level overrides, {stage name or 'defaults': [(section.key=value, as typed)]})."""
    top: list[str] = []
    scoped: dict[str, list[tuple[str, str]]] = {}
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        parts = key.split(".")
        if len(parts) == 3:
            if parts[0] != "defaults" and parts[0] not in stage_names:
                raise UserError(f"--set {text}: no stage named {parts[0]!r} (stages: {', '.join(stage_names)}; "
                                "'defaults' sets every stage)")
            scoped.setdefault(parts[0], []).append((text.split(".", 1)[1], text))
        else:
            top.append(text)
    return top, scoped


def _merge(defaults: dict, body: dict) -> dict:
    merged = {section: dict(values) for section, values in defaults.items()}
    for section, values in body.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section].update(values)
        else:
            merged[section] = values
    return merged


def _resolve_data(recipe: Recipe, names: dict[str, Path], where: str) -> Recipe:
    """``@NAME`` data values replaced by the built paths."""

    def path(value: str, key: str) -> str:
        if not value.startswith("@"):
            return value
        if value[1:] not in names:
            raise UserError(f"{where}: {key} = '{value}' names no data set this run builds "
                            f"(built: {', '.join('@' + n for n in names)})")
        return str(names[value[1:]])

    data = recipe.data
    if hasattr(data, "sources"):
        data = replace(data, shards=path(data.shards, "data.shards"),
                       sources=[replace(s, shards=path(s.shards, f"data.sources[{i}].shards"))
                                for i, s in enumerate(data.sources)])
    else:
        data = replace(data, train=path(data.train, "data.train"), val=path(data.val, "data.val"))
    return recipe.with_section("data", data)


def _stage_recipe(table: dict, defaults: dict, path: Path, overrides: list[tuple[str, str]]) -> tuple[str, str, Recipe]:
    if not isinstance(table, dict) or not isinstance(table.get("name"), str) or not STAGE_NAME.fullmatch(table["name"]):
        raise UserError(f"{path}: every [[stage]] needs a name of lower-case letters, digits, '-' or '_'")
    name, kind = table["name"], table.get("kind")
    if kind not in STAGE_SECTIONS:
        raise UserError(f"{path}: stage {name}: kind must be one of {', '.join(STAGE_SECTIONS)}, got {kind!r}")
    body = _merge(defaults, {k: v for k, v in table.items() if k not in ("name", "kind")})
    if body.get("init", {}).get("checkpoint"):
        raise UserError(f"{path}: stage {name}: init.checkpoint is set by the plan (the base model, then the "
                        "previous stage's final model); remove it")
    try:
        recipe = build_recipe(body, f"{path} [stage {name}]", [short for short, _ in overrides],
                              sections=STAGE_SECTIONS[kind])
    except UserError as exc:
        message = str(exc)
        for short, typed in overrides:
            message = message.replace(f"--set {short}", f"--set {typed}")
        raise UserError(message) from None
    return name, kind, recipe


def plan(path: Path, kind: str, overrides: list[str], run_dir: Path) -> Plan:
    """Read and check the recipe, and lay out every stage (see the module docstring)."""
    data = read_toml(path)
    tables, defaults = data.pop("stage", []), data.pop("defaults", {})
    if not isinstance(tables, list) or not tables:
        raise UserError(f"{path}: no [[stage]] tables (a specialisation needs at least one training stage)")
    if not isinstance(defaults, dict) or not all(isinstance(v, dict) for v in defaults.values()):
        raise UserError(f"{path}: [defaults] must hold section tables, e.g. [defaults.train]")
    names = [t.get("name") if isinstance(t, dict) else None for t in tables]
    top_overrides, scoped = _split_overrides(overrides, [n for n in names if isinstance(n, str)])
    top = build_recipe(data, str(path), top_overrides, sections=TOP_SECTIONS)
    if top.specialize.kind != kind:
        raise UserError(f"{path}: specialize.kind = '{top.specialize.kind}' but this is 'qwen specialize {kind}'")
    if not top.specialize.base:
        raise UserError(f"{path}: specialize.base is not set (the base model directory)")
    base = Path(top.specialize.base)
    if not (base / "config.json").is_file():
        raise UserError(f"{path}: specialize.base = '{base}' is not a model directory (no config.json)")
    built = data_names(kind, run_dir, top)
    config, source, stages, seen = read_config(base), base, [], set()
    for table in tables:
        name, stage_kind, recipe = _stage_recipe(table, defaults, path, scoped.get("defaults", []) +
                                                 scoped.get(table.get("name"), []))
        if name in seen:
            raise UserError(f"{path}: two stages are named {name!r}")
        seen.add(name)
        recipe = _resolve_data(recipe, built, f"{path} [stage {name}]")
        grown = grown_config(config, recipe.data.seq_len)
        init = run_dir / INIT / name if grown is not None else source
        recipe = recipe.with_section("init", InitSection(checkpoint=str(init)))
        stage = StagePlan(name, stage_kind, recipe, run_dir / STAGES / name, source, grown)
        stages.append(stage)
        config, source = grown or config, stage.final_dir
    return Plan(path, top, stages, built)

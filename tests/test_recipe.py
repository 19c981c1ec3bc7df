"""Recipes: typed sections, overrides, errors naming file and key (type, range, shape), TOML round trip, shipped recipes."""

from __future__ import annotations

import subprocess
import sys
import typing
from dataclasses import fields
from pathlib import Path

import pytest

from qwen_cli.errors import UserError
from qwen_cli.recipe import BASE_SECTIONS, RANGE, ModelSection, build_recipe, load_recipe, parse_override
from qwen_cli.stages.pretrain import SECTIONS

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_sections_types_and_defaults(tmp_path):
    r = load_recipe(write(tmp_path, "[optim]\nlr = 1\nbetas = [0.9, 0.99]\n[train]\nsteps = 5\n"))
    assert r.optim.lr == 1.0 and isinstance(r.optim.lr, float)
    assert r.optim.betas == [0.9, 0.99] and r.train.steps == 5
    assert r.schedule.min_lr_ratio == 0.1 and set(r.sections) == set(BASE_SECTIONS)


def test_overrides_are_toml_values_or_bare_strings(tmp_path):
    r = load_recipe(write(tmp_path, "[train]\nsteps = 5\n"),
                    ["train.steps=7", "optim.betas=[0.8, 0.9]", "data.shards=runs/x/shards", "train.compile=true",
                     'sample.prompt="a = b"'], sections=SECTIONS)
    assert (r.train.steps, r.optim.betas, r.data.shards, r.train.compile) == (7, [0.8, 0.9], "runs/x/shards", True)
    assert r.sample.prompt == "a = b"
    assert parse_override("a.b= 3e-4 ") == ("a", "b", 3e-4)


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("[train]\nbach_tokens = 4\n", [], "r.toml: unknown key 'train.bach_tokens' (did you mean 'train.batch_tokens'?)"),
        ("[trian]\nsteps = 4\n", [], "r.toml: unknown section [trian] (did you mean 'train'?)"),
        ("[train]\nsteps = 'ten'\n", [], "r.toml: 'train.steps' must be int, got \"ten\""),
        ("[train]\ndtype = 'fp16'\n", [], "r.toml: 'train.dtype' must be 'float32' | 'bfloat16', got \"fp16\""),
        ("[optim]\nbetas = [0.9, 'x']\n", [], "'optim.betas' must be list of float"),
        ("[train]\nsteps = 4\n", ["train.stpes=3"], "--set train.stpes=3: unknown key 'train.stpes' (did you mean"),
        ("[train]\nsteps = 4\n", ["train.steps=1.5"], "--set train.steps=1.5: 'train.steps' must be int, got 1.5"),
        ("[train]\nsteps = 4\n", ["steps=3"], "--set steps=3: the key must be section.key"),
        ("[train\n", [], "r.toml: invalid TOML"),
        ("train = 3\n", [], "r.toml: 'train' must be a table"),
    ],
)
def test_bad_recipes_name_file_and_key(tmp_path, text, overrides, message):
    with pytest.raises(UserError) as info:
        load_recipe(write(tmp_path, text), overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_every_numeric_recipe_key_has_a_range():
    """Every int/float (or list of floats) key of every base, pretrain and SFT section but [model] (checked by
    ModelConfig)."""
    from qwen_cli.stages import pretrain, sft

    for name, cls in [*BASE_SECTIONS.items(), *pretrain.SECTIONS.items(), *sft.SECTIONS.items()]:
        if cls is ModelSection:
            continue
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if hints[f.name] in (int, float, list[float], list[int]):
                assert RANGE in f.metadata, f"{name}.{f.name} has no range"


def test_range_errors_name_where_the_key_was_set(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text("[train]\nmicro_batch_size = 0\n[model]\nhidden_size = 128\nnum_heads = 4\n")
    with pytest.raises(UserError) as info:
        load_recipe(path)
    assert str(info.value) == f"{path}: 'train.micro_batch_size' must be >= 1, got 0"
    # the final values are checked: a bad file value replaced by a --set, or a shape valid only once
    # every --set is applied (128 / 6 is not whole, 96 / 6 is), are no error
    recipe = load_recipe(path, ["train.micro_batch_size=2", "model.num_heads=6", "model.hidden_size=96"])
    assert (recipe.train.micro_batch_size, recipe.model.num_heads, recipe.model.hidden_size) == (2, 6, 96)
    with pytest.raises(UserError) as info:
        load_recipe(path, ["train.micro_batch_size=2", "model.num_heads=5"])
    assert str(info.value) == "--set model.num_heads=5: 'model.num_heads' must divide hidden_size 128, got 5"


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="nope.toml: recipe file not found"):
        load_recipe(tmp_path / "nope.toml")


def test_resolved_toml_round_trips(tmp_path):
    r = load_recipe(ROOT / "recipes" / "tiny" / "pretrain.toml", ['sample.prompt="q\\"uote\\n"'], sections=SECTIONS)
    again = build_recipe(__import__("tomllib").loads(r.to_toml()), sections=SECTIONS)
    assert again.to_dict() == r.to_dict()


@pytest.mark.parametrize("size,params,tokens", [("1.8b", 1_836_828_672, 2_200_000_000_000),
                                                ("7b", 7_721_324_544, 2_400_000_000_000),
                                                ("14b", 14_167_290_880, 3_000_000_000_000)])
def test_paper_recipes(size, params, tokens):
    import torch

    from qwen_cli.model import QwenModel

    r = load_recipe(ROOT / "recipes" / f"qwen-{size}" / "pretrain.toml", sections=SECTIONS)
    assert (r.optim.lr, r.optim.betas, r.optim.eps, r.schedule.min_lr_ratio) == (3e-4, [0.9, 0.95], 1e-8, 0.1)
    assert (r.train.batch_tokens, r.data.seq_len, r.train.dtype) == (4_194_304, 2048, "bfloat16")
    assert (r.train.tokens, r.train.steps) == (tokens, 0)  # report Table 1: 2.2T / 2.4T / 3.0T tokens
    assert (r.schedule.decay, r.schedule.warmup_steps, r.schedule.warmup_ratio) == ("cosine", 2000, 0.0)  # not in the report
    assert (r.optim.weight_decay, r.optim.grad_clip) == (0.1, 1.0)  # not in the report
    with torch.device("meta"):
        model = QwenModel(r.model.to_config(vocab_size=151936))
    assert model.num_parameters() == params


@pytest.mark.parametrize("size", ["1.8b", "7b", "14b"])
def test_paper_sft_recipes(size):
    """Report §3.1.2: sequence length 2048, batch 128 sequences, 4000 steps, warm-up over 1430 steps to
    a peak lr of 2e-6, weight decay 0.1, dropout 0.1, gradient clipping 1.0, AdamW (0.9, 0.95, 1e-8)."""
    from qwen_cli.stages.sft import SECTIONS as SFT_SECTIONS

    r = load_recipe(ROOT / "recipes" / f"qwen-{size}" / "sft.toml", sections=SFT_SECTIONS)
    assert (r.data.seq_len, r.train.batch_tokens // r.data.seq_len, r.train.steps) == (2048, 128, 4000)
    assert (r.schedule.warmup_steps, r.optim.lr, r.optim.weight_decay) == (1430, 2e-6, 0.1)
    assert (r.model.dropout, r.optim.grad_clip, r.optim.betas, r.optim.eps) == (0.1, 1.0, [0.9, 0.95], 1e-8)
    assert r.train.batch_tokens % r.data.seq_len == 0 and r.lora.rank == 0  # full fine-tuning
    assert r.init.checkpoint == f"runs/qwen-{size}/pretrain/final"


def test_cli_bad_recipe_exits_2_with_one_line(tmp_path):
    path = write(tmp_path, "[train]\nsteps = 4\n[data]\nshards = 'no/such/dir'\n")
    proc = subprocess.run([sys.executable, "-m", "qwen_cli.cli", "pretrain", str(path), "--set", "train.seed=x"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --set train.seed=x: 'train.seed' must be int, got \"x\""
    proc = subprocess.run([sys.executable, "-m", "qwen_cli.cli", "pretrain", str(path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {path}: data.shards = 'no/such/dir' is not a directory"

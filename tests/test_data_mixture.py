"""Data mixtures (`data.sources`): exact proportions, every window once per epoch, layout-free and resumable."""

from __future__ import annotations

import os
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
from train_fixtures import TINY_OVERRIDES, TINY_RECIPE

from qwen_cli.data.encode import encode_corpus
from qwen_cli.data.shards import MIX_BLOCK, BatchLayout, MixedBatches, TokenWindows, block_quotas
from qwen_cli.errors import UserError
from qwen_cli.recipe import load_recipe
from qwen_cli.stages.pretrain import SECTIONS, PretrainStage
from qwen_cli.tokenizer import Tokenizer
from qwen_cli.train.trainer import run_stage


@pytest.fixture(scope="module")
def second_shards(shards, tmp_path_factory) -> Path:
    """Shards of different stdlib modules, encoded with the same byte tokenizer as ``shards``."""
    root = tmp_path_factory.mktemp("second")
    corpus = root / "corpus"
    corpus.mkdir()
    for name in ("colorsys.py", "calendar.py"):
        shutil.copy(Path(os.__file__).parent / name, corpus / name)
    out = root / "shards"
    encode_corpus([str(corpus)], str(shards / "tokenizer"), out, val_fraction=0.3, workers=1, seed=0)
    return out


def mixture_recipe(*extra: str):
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("data.shards")]
    return load_recipe(TINY_RECIPE, (*overrides, 'data.shards=""', *extra), sections=SECTIONS)


def sources_override(*pairs) -> str:
    return "data.sources=[" + ", ".join(f'{{shards = "{s}", weight = {w}}}' for s, w in pairs) + "]"


def test_block_quotas_are_whole_shares_that_fill_the_block():
    assert block_quotas([0.7, 0.3]) == [717, 307]
    assert block_quotas([1, 1, 1]) == [342, 341, 341]
    assert sum(block_quotas([0.05, 0.5, 0.45])) == MIX_BLOCK


def test_each_source_is_read_in_its_exact_share_and_each_index_once(shards, second_shards):
    windows = [TokenWindows(shards, "train", 32), TokenWindows(second_shards, "train", 32)]
    mix = MixedBatches(windows, [0.7, 0.3], BatchLayout(0, 1, 4, 1), seed=3)
    located = [mix.locate(k) for k in range(3 * MIX_BLOCK)]
    for source, quota in enumerate(mix.quotas):
        taken = sorted(j for s, j in located if s == source)
        assert taken == list(range(3 * quota))  # exact share, no index skipped or repeated
    first_block = [s for s, _ in located[:MIX_BLOCK]]
    assert first_block != sorted(first_block)  # interleaved, not one source after the other


def test_mixture_batches_do_not_depend_on_the_layout_and_resume_exactly(shards, second_shards):
    windows = [TokenWindows(shards, "train", 32), TokenWindows(second_shards, "train", 32)]
    single = MixedBatches(windows, [1, 2], BatchLayout(0, 1, 2, 4), seed=5)
    reference = np.concatenate([next(single)["input_ids"].numpy() for _ in range(8)])  # two steps
    ranks = [MixedBatches(windows, [1, 2], BatchLayout(r, 2, 2, 2), seed=5) for r in range(2)]
    for step in range(2):
        parts = [np.concatenate([next(it)["input_ids"].numpy() for _ in range(2)]) for it in ranks]
        assert np.array_equal(np.concatenate(parts), reference[step * 8:(step + 1) * 8])
    resumed = MixedBatches(windows, [1, 2], BatchLayout(0, 1, 4, 1), seed=5)
    resumed.load_state_dict({**single.state_dict(), "sequences": 8})
    assert np.array_equal(next(resumed)["input_ids"].numpy(), reference[8:12])


def test_pretrain_on_a_mixture_draws_from_both_and_records_the_sources(shards, second_shards, tmp_path):
    recipe = mixture_recipe(sources_override((shards, 0.5), (second_shards, 0.5)), "train.steps=2")
    stage = PretrainStage(recipe)
    batches = stage.train_batches(BatchLayout(0, 1, 8, 1))
    rows = {tuple(r) for r in next(batches)["input_ids"].tolist()}
    per_source = [{tuple(w.window(i)[:-1]) for i in range(w.num_windows)} for w in stage.train_windows]
    assert all(rows & source for source in per_source)
    result = run_stage(PretrainStage, recipe, tmp_path / "run")
    assert result.exit_code == 0 and np.isfinite(result.metrics["loss"])
    saved = tomllib.loads((tmp_path / "run" / "final" / "recipe.toml").read_text())
    assert [s["shards"] for s in saved["data"]["sources"]] == [str(shards), str(second_shards)]


@pytest.mark.parametrize("extra, message", [
    (("data.shards=SHARDS",), "not both"),
    (("data.sources=[]", "data.shards=''"), "data.shards is not set"),
])
def test_shards_and_sources_are_exclusive_and_one_is_needed(shards, second_shards, extra, message):
    extra = [e.replace("SHARDS", str(shards)) for e in extra]
    with pytest.raises(UserError, match=message):
        PretrainStage(mixture_recipe(sources_override((shards, 1), (second_shards, 1)), *extra))


def test_bad_weights_and_mixed_tokenizers_are_refused(shards, second_shards, tmp_path):
    with pytest.raises(UserError, match=r"data.sources\[1\].weight must be a positive number"):
        PretrainStage(mixture_recipe(sources_override((shards, 1), (second_shards, 0))))
    with pytest.raises(UserError, match="never be sampled"):
        PretrainStage(mixture_recipe(sources_override((shards, 1), (second_shards, 1e-6)))).train_batches(
            BatchLayout(0, 1, 4, 1))
    other = tmp_path / "other"
    Tokenizer({bytes([i]): (i + 1) % 256 for i in range(256)}, name="shifted").save(tmp_path / "tok", hf=False)
    encode_corpus([str(Path(os.__file__).parent / "colorsys.py")], str(tmp_path / "tok"), other,
                  val_fraction=0, workers=1, seed=0)
    with pytest.raises(UserError, match="different tokenizers"):
        PretrainStage(mixture_recipe(sources_override((shards, 1), (other, 1))))

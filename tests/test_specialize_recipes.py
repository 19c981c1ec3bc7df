"""The specialisation recipes carry the report's numbers; the math tasks `qwen eval` gains score right."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen_cli.evaluation.harness.registry import resolve
from qwen_cli.evaluation.harness.tasks import _math23k_check, _math401_check, exact_answer, task_config
from qwen_cli.recipe import build_recipe, read_toml
from qwen_cli.stages.specialize.recipe import TOP_SECTIONS, _stage_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def stages(path: Path) -> dict:
    data = read_toml(path)
    tables, defaults = data.pop("stage"), data.pop("defaults", {})
    build_recipe(data, str(path), sections=TOP_SECTIONS)
    return {name: recipe for name, _, recipe in (_stage_recipe(t, defaults, path, []) for t in tables)}


@pytest.mark.parametrize(("size", "cpt_lr", "sft_lr"), [("7b", 3e-5, 1e-5), ("14b", 6e-5, 2e-6)])
def test_paper_code_recipes(size, cpt_lr, sft_lr):
    found = stages(RECIPES / f"qwen-{size}" / "code.toml")
    cpt = found.pop("code-pretrain")
    assert (cpt.data.seq_len, cpt.optim.lr, cpt.train.tokens) == (8192, cpt_lr, 90_000_000_000)
    assert found and all(s.optim.lr == sft_lr for s in found.values())
    for recipe in (cpt, *found.values()):
        assert (recipe.schedule.warmup_ratio, recipe.schedule.decay) == (0.03, "constant")
        assert (list(recipe.optim.betas), recipe.optim.eps) == ([0.9, 0.95], 1e-8)


@pytest.mark.parametrize("size", ["7b", "14b"])
def test_paper_math_recipes(size):
    (sft,) = stages(RECIPES / f"qwen-{size}" / "math.toml").values()
    assert (sft.data.seq_len, sft.optim.lr, sft.train.steps, sft.data.train) == (1024, 2e-5, 50_000, "@math")
    assert (sft.train.batch_tokens // sft.data.seq_len, sft.schedule.warmup_steps, sft.model.dropout) == (128, 1430, 0.1)


@pytest.mark.parametrize("kind", ["code", "math"])
def test_tiny_recipes_parse(kind):
    assert stages(RECIPES / "tiny" / f"{kind}.toml")


def test_math_answers_are_compared_exactly():
    assert exact_answer(" -4/5\nmore text", "-4/5") and exact_answer("0.50.", "1/2")
    assert exact_answer("24, 1, -0.1, -4", "24,1,-0.1,-4") and not exact_answer("24, 1, -4, -0.1", "24, 1, -0.1, -4")
    assert not exact_answer("-45", "-4/5") and not exact_answer("", "3")
    assert _math401_check("= 3.1416 approximately", {"response": "3.14159"})
    assert not _math401_check("3.2", {"response": 3.14159})
    assert _math23k_check("所以答案是 5/6", {"ans": "0.8333333"}) and _math23k_check("共 50% 了", {"ans": "0.5"})


def test_math_tasks_read_their_data_dir(tmp_path):
    rows = {"math_heldout": {"question": "What is 2 + 3?", "answer": "5"},
            "math401": {"query": "2+3=", "response": "5"},
            "math23k": {"original_text": "小明有2个苹果，又买了3个，共有几个？", "ans": "5"}}
    for name, row in rows.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "test.jsonl").write_text(json.dumps(row, ensure_ascii=False) + "\n")
        config = task_config(resolve(name, tmp_path))
        doc = rows[name]
        assert config["metric_list"][0]["metric"] == "exact_match" and config["num_fewshot"] == 0
        assert config["process_results"](doc, ["5\n"]) == {"exact_match": 1.0}
        assert config["process_results"](doc, ["6\n"]) == {"exact_match": 0.0}
        assert next(iter(doc.values())) in config["doc_to_text"](doc)  # the question is asked

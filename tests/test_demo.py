"""`make demo` (scripts/demo.sh) without running it: the script parses, runs every stage of the report
in order, names recipes that exist and load with its overrides, and its closing table reads back what
each stage writes. The whole run is `make demo` (about 10 minutes on 2 cores)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "scripts" / "demo.sh"
REPORT = ROOT / "scripts" / "demo_report.py"


def _script() -> str:
    return DEMO.read_text()


def _report_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_report", REPORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _steps() -> list[str]:
    return re.findall(r"^step (\w+) ", _script(), flags=re.M)


@pytest.mark.parametrize("script", ["demo.sh", "demo_rlhf.sh", "demo_specialize.sh"])
def test_demo_scripts_parse(script):
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)], check=True)


def test_every_stage_of_the_report_runs_once_and_is_reported():
    steps = _steps()
    assert steps == ["prepare", "tokenizer", "pretrain", "context", "sft", "chat", "alignment", "eval", "tool",
                     "specialize"]
    assert f"STEPS={len(steps)}\n" in _script()
    assert list(_report_module().STAGES) == steps


def test_the_recipes_it_names_exist():
    named = set(re.findall(r"recipes/[\w/]+\.toml", _script()))
    assert {"recipes/tiny/pretrain.toml", "recipes/tiny/sft.toml", "recipes/tiny/tool_sft.toml",
            "recipes/tiny/math.toml"} <= named
    assert all((ROOT / path).is_file() for path in named)


def test_the_training_recipes_load():
    from qwen_cli.recipe import load_recipe
    from qwen_cli.stages.sft import SECTIONS

    for name in ("sft", "tool_sft"):
        recipe = load_recipe(ROOT / "recipes" / "tiny" / f"{name}.toml", sections=SECTIONS)
        assert recipe.data.seq_len <= 256  # the tiny model's window


def test_the_short_specialisation_overrides_apply():
    from qwen_cli.recipe import build_recipe, read_toml
    from qwen_cli.stages.specialize.recipe import TOP_SECTIONS, _split_overrides, _stage_recipe

    command = re.search(r"qwen specialize math .*?(?=\n\n|\Z)", _script(), flags=re.S).group()
    words = shlex.split(command.replace("\\\n", " "))
    overrides = [words[i + 1] for i, word in enumerate(words) if word == "--set"]
    path = ROOT / "recipes" / "tiny" / "math.toml"
    data = read_toml(path)
    tables, defaults = data.pop("stage"), data.pop("defaults", {})
    top, scoped = _split_overrides(overrides, [t["name"] for t in tables])
    assert build_recipe(data, str(path), top, sections=TOP_SECTIONS).math.per_module == 300
    (_, _, recipe), = [_stage_recipe(t, defaults, path, scoped[t["name"]]) for t in tables]
    assert (recipe.train.steps, recipe.data.seq_len) == (40, 256)


def _fake_run(tmp_path: Path) -> Path:
    """The files each stage of the demo writes, with the fields the report reads."""
    run = tmp_path / "runs" / "tiny"

    def put(rel: str, value) -> None:
        path = run / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value if isinstance(value, str) else json.dumps(value))

    def put_jsonl(rel: str, rows: list[dict]) -> None:
        put(rel, "".join(json.dumps(r) + "\n" for r in rows))

    put("clean/manifest.json", {"rules": [{"rule": "language", "docs_in": 10, "docs_out": 10},
                                          {"rule": "minhash_dedup", "docs_in": 10, "docs_out": 9}],
                                "output": {"docs": 9, "bytes": 2_000_000}})
    put("shards/manifest.json", {"tokenizer": {"vocab_size": 8192}, "tokens": 1000,
                                 "splits": {"train": {"tokens": 950}, "val": {"tokens": 50}}})
    for stage in ("pretrain", "sft"):
        put_jsonl(f"{stage}/metrics.jsonl", [{"step": 10, "loss": 3.0}, {"step": 10, "val_loss": 5.0},
                                             {"step": 20, "loss": 2.0}, {"step": 20, "val_loss": 4.5}])  # a gap
    put("context.json", {"trained_length": 128, "lengths": [128, 256],
                         "perplexity": {"plain": {"128": 100.0, "256": 150.0}, "ntk": {"128": 100.0, "256": 120.0}}})
    put("chat.txt", "I am fine.\n")
    put("eval.json", {"results": {"math401": {"exact_match": 0.25}}, "samples": {"math401": [{}] * 4}})
    put_jsonl("traces/test.jsonl", [{"final_answer": "579"}, {"final_answer": "1000"}])
    put_jsonl("tool/episodes.jsonl", [
        {"user": "What is 123 + 456?", "final_answer": "579",
         "steps": [{"action": "python", "action_input": "print(123+456)", "observation": {"text": "579"}}]},
        {"user": "What is 500 + 500?", "final_answer": "999", "steps": []}])
    put("math/manifest.json", {"evaluation": {"items": 100, "scores": {"base": {"exact_match": 0.0},
                                                                      "math-sft": {"exact_match": 0.12}}}})
    put("times.tsv", "".join(f"{key}\t10.4\t18.0\n" for key in _steps() if key != "alignment"))  # runs/arith is absent
    return run


def test_the_summary_reads_each_stage(tmp_path):
    report = _report_module()
    lines = report.table(_fake_run(tmp_path))
    text = "\n".join(lines)
    for expected in ("9 of 10 documents kept", "minhash_dedup 1", "8,192-token vocabulary",
                     "validation loss 5.00 -> 4.50", "the gap: ", "plain 100/150, best ntk 100/120", "train loss 2.00",
                     "'I am fine.'", "math401", "25.0%", "print(123+456) -> 579 -> final answer 579 (right)",
                     "right number for 1/2, the final answer was right for 1/2", "math-sft 12.0%"):
        assert expected in text, expected
    assert lines[0].split() == ["stage", "wall", "CPU", "measured"]
    assert lines[-1].split()[:4] == ["total", "94s", "162s", "(CPU/wall"]


def test_a_missing_stage_output_fails_the_report(tmp_path):
    run = _fake_run(tmp_path)
    (run / "tool" / "episodes.jsonl").unlink()
    with pytest.raises(FileNotFoundError):
        _report_module().table(run)


@pytest.mark.parametrize("rm_accuracy", [0.553, 0.952])
def test_the_alignment_line_says_why_a_short_run_cannot_gain(tmp_path, monkeypatch, rm_accuracy):
    report = _report_module()
    numbers = {"rm_accuracy": rm_accuracy, "rm_sample_accuracy": 0.5, "sft_gold": 0.47, "ppo_gold": 0.21,
               "ppo_max_kl": 0.5, "dpo_gold_before": 0.47, "dpo_gold": 0.42}
    monkeypatch.setattr(report, "alignment_numbers", lambda _: numbers)
    monkeypatch.setattr(report, "ARITH", tmp_path)
    (tmp_path / "reward" / "rm").mkdir(parents=True)
    (tmp_path / "reward" / "rm" / "recipe.toml").write_text("[rm]\nsteps = 60\n")
    lines = report.alignment(tmp_path)
    assert lines[1] == "PPO: held-out gold exact match 47.0% -> 21.0% (max KL 0.500)"
    short = "below the 90% PPO needs after this short run's 60 steps; `make demo-rlhf` trains it for 3,500 and"
    assert (short in lines[-1]) == (rm_accuracy < 0.9) and len(lines) == (4 if rm_accuracy < 0.9 else 3)

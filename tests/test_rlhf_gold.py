"""`qwen rlhf gold`: greedy gold exact match of checkpoints, and the earliest one that reaches a bar."""

from __future__ import annotations

import json

import torch
from rlhf_fixtures import byte_tokenizer, tiny_checkpoint

from qwen_cli.checkpoint import save_model
from qwen_cli.model import ModelConfig, QwenModel


def digit_model(path, digit: str):
    """A decoder whose greedy reply is always ``digit`` repeated: its blocks add nothing to the residual stream,
    every embedding is positive in dimension 0, and only that dimension reaches the output, only for ``digit``."""
    tok = byte_tokenizer()
    config = ModelConfig(vocab_size=tok.padded_vocab_size, hidden_size=32, num_layers=2, num_heads=2,
                         intermediate_size=64, max_position_embeddings=128)
    model = QwenModel(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight", "lm_head.weight")) or name == "norm.weight":
                param.zero_()
        model.embed_tokens.weight[:, 0] = 1.0
        model.norm.weight[0] = 1.0
        model.lm_head.weight[ord(digit), 0] = 1.0
    return save_model(path, model, tok)


def prompts_file(path, answers: list[str]):
    path.write_text("".join(json.dumps({"prompt": f"Question {i}?", "answer": a}) + "\n" for i, a in enumerate(answers)))
    return path


def gold_args(*checkpoints, prompts, extra=()):
    return ["rlhf", "gold", *map(str, checkpoints), "--prompts", str(prompts), "--system", "", "--max-new-tokens", "1",
            *extra]


def test_each_checkpoint_scores_the_share_of_prompts_whose_answer_its_greedy_reply_gives(tmp_path, run_qwen):
    sevens, threes = digit_model(tmp_path / "sevens", "7"), digit_model(tmp_path / "threes", "3")
    prompts = prompts_file(tmp_path / "p.jsonl", ["7", "7", "7", "3"])
    code, out, _ = run_qwen(*gold_args(sevens, threes, prompts=prompts, extra=["--json"]))
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == [
        {"checkpoint": str(sevens), "gold": 0.75, "prompts": 4}, {"checkpoint": str(threes), "gold": 0.25, "prompts": 4}]
    code, out, _ = run_qwen(*gold_args(sevens, prompts=prompts, extra=["--limit", "2"]))
    assert code == 0 and out.splitlines() == [f"{sevens}  gold 100.0% of 2"]


def test_first_at_least_prints_only_the_earliest_checkpoint_that_reaches_the_bar(tmp_path, run_qwen):
    sevens, threes = digit_model(tmp_path / "sevens", "7"), digit_model(tmp_path / "threes", "3")
    prompts = prompts_file(tmp_path / "p.jsonl", ["7", "7", "7", "3"])
    code, out, err = run_qwen(*gold_args(threes, sevens, threes, prompts=prompts, extra=["--first-at-least", "0.5"]))
    assert code == 0 and out == f"{sevens}\n"
    assert err.splitlines() == [f"{threes}  gold 25.0% of 4", f"{sevens}  gold 75.0% of 4"]  # stops at the first
    code, out, _ = run_qwen(*gold_args(threes, sevens, prompts=prompts, extra=["--first-at-least", "0.25"]))
    assert code == 0 and out == f"{threes}\n"  # reaching the bar exactly is enough
    code, out, _ = run_qwen(*gold_args(threes, sevens, prompts=prompts, extra=["--first-at-least", "0.5", "--json"]))
    assert code == 0 and out == f"{sevens}\n"  # still only the path, for $(...)
    code, out, err = run_qwen(*gold_args(threes, prompts=prompts, extra=["--first-at-least", "0.3"]))
    assert code == 1 and out == "" and "no checkpoint reaches gold 30.0%" in err


def test_bad_input_is_refused_in_one_line_before_any_model_runs(tmp_path, run_qwen):
    model = tiny_checkpoint(tmp_path / "model")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Q?", "answer": "1"}) + "\n" + json.dumps({"prompt": "Hi"}) + "\n")
    code, _, err = run_qwen(*gold_args(model, prompts=bad))
    assert code == 2 and f"{bad}:2" in err and "answer" in err
    code, out, err = run_qwen(*gold_args(model, tmp_path / "missing", prompts=prompts_file(tmp_path / "p.jsonl", ["1"])))
    assert code == 2 and "missing: not a checkpoint directory" in err and out == ""  # refused before scoring the first
    code, _, err = run_qwen(*gold_args(model, prompts=tmp_path / "p.jsonl")[:-1], "128")
    assert code == 2 and "--max-new-tokens 128 leaves no room" in err

"""What each stage of `make demo` (scripts/demo.sh) measured, read back from the files the stage wrote.

    python scripts/demo_report.py RUN STAGE   one stage's line(s), printed right after the stage runs
    python scripts/demo_report.py RUN         the closing table: every stage in RUN/times.tsv (written by
                                              demo.sh: stage key, wall and CPU seconds), its times and numbers

RUN is runs/tiny; the alignment and eval stages read the short toy arithmetic run that
`scripts/demo_rlhf.sh --short` leaves in runs/arith-short. A stage whose files are missing or malformed
raises, so a broken stage turns the demo red.
"""

from __future__ import annotations

import json
import math
import sys
import tomllib
from pathlib import Path

from qwen_cli.rl.toy_report import RM_FLOOR
from qwen_cli.rl.toy_report import measure as alignment_numbers

ARITH = Path("runs/arith-short")
FULL_REWARD_RECIPE = Path("recipes/tiny/arith_reward.toml")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _json(path: Path):
    return json.loads(path.read_text())


def prepare(run: Path) -> list[str]:
    manifest = _json(run / "clean" / "manifest.json")
    first, kept = manifest["rules"][0]["docs_in"], manifest["output"]["docs"]
    removed = {r["rule"]: r["docs_in"] - r["docs_out"] for r in manifest["rules"] if r["docs_in"] != r["docs_out"]}
    why = ", ".join(f"{rule} {n}" for rule, n in removed.items()) or "none"
    return [f"{kept} of {first} documents kept ({manifest['output']['bytes'] / 1e6:.2f} MB); removed: {why}"]


def tokenizer(run: Path) -> list[str]:
    shards = _json(run / "shards" / "manifest.json")
    split = shards["splits"]
    return [f"{shards['tokenizer']['vocab_size']:,}-token vocabulary; {shards['tokens']:,} tokens "
            f"(train {split['train']['tokens']:,}, validation {split['val']['tokens']:,})"]


def _val_losses(metrics: Path) -> list[float]:
    return [m["val_loss"] for m in _jsonl(metrics) if "val_loss" in m]


def pretrain(run: Path) -> list[str]:
    val = _val_losses(run / "pretrain" / "metrics.jsonl")
    return [f"validation loss {val[0]:.2f} -> {val[-1]:.2f} (perplexity {math.exp(val[-1]):.0f})"]


def context(run: Path) -> list[str]:
    sweep = _json(run / "context.json")
    lengths = "/".join(str(n) for n in sweep["lengths"])
    table = sweep["perplexity"]
    best = min(table, key=lambda name: table[name][str(sweep["lengths"][-1])])

    def row(name: str) -> str:
        return "/".join(f"{table[name][str(n)]:.0f}" for n in sweep["lengths"])

    return [f"perplexity at {lengths} tokens (trained at {sweep['trained_length']}): plain {row('plain')}, "
            f"best {best} {row(best)}"]


def sft(run: Path) -> list[str]:
    metrics = _jsonl(run / "sft" / "metrics.jsonl")
    train = [m["loss"] for m in metrics if "loss" in m][-1]
    val = _val_losses(run / "sft" / "metrics.jsonl")
    lines = [f"train loss {train:.2f}, validation loss {val[0]:.2f} -> {val[-1]:.2f}"]
    if val[-1] - train > 1:
        lines.append("the gap: the train loss is on conversations seen many times over (replies memorised), the "
                     "validation loss on conversations never seen: new English for a model pretrained on Python "
                     "only (docs/sft-and-chat.md)")
    return lines


def chat(run: Path) -> list[str]:
    reply = (run / "chat.txt").read_text().strip()
    first = reply.partition("\n")[0]
    return [f"'Hello, how are you?' -> {first!r}" + (" (first line)" if first != reply else "")]


def alignment(_run: Path) -> list[str]:
    m = alignment_numbers(ARITH)
    return [f"reward model: held-out gold vs near miss {m['rm_accuracy']:.1%}, right vs wrong policy sample "
            f"{m['rm_sample_accuracy']:.1%}",
            f"PPO: held-out gold exact match {m['sft_gold']:.1%} -> {m['ppo_gold']:.1%} (max KL {m['ppo_max_kl']:.3f})",
            f"DPO: held-out gold exact match {m['dpo_gold_before']:.1%} -> {m['dpo_gold']:.1%}",
            *([_short_reward_model()] if m["rm_accuracy"] < RM_FLOOR else [])]


def _short_reward_model() -> str:
    """Why PPO could not gain in the short run, with both runs' reward-model steps from their recipes."""
    def steps(recipe: Path) -> int:
        return tomllib.loads(recipe.read_text())["rm"]["steps"]

    return (f"(the reward model is below the {RM_FLOOR:.0%} PPO needs after this short run's "
            f"{steps(ARITH / 'reward' / 'rm' / 'recipe.toml'):,} steps; `make demo-rlhf` trains it for "
            f"{steps(FULL_REWARD_RECIPE):,} and checks the gains: docs/rlhf.md)")


def evaluate(run: Path) -> list[str]:
    record = _json(run / "eval.json")
    score = record["results"]["math401"]["exact_match"]
    n = len(record["samples"]["math401"])
    return [f"lm-eval math401 (zero-shot, greedy) on {n} held-out sums, arithmetic base model: {score:.1%} exact"]


def tool(run: Path) -> list[str]:
    episodes = _jsonl(run / "tool" / "episodes.jsonl")
    gold = [a["final_answer"] for a in _jsonl(run / "traces" / "test.jsonl")[: len(episodes)]]
    results = [[(s["observation"] or {}).get("text", "").strip() for s in e["steps"]] for e in episodes]
    tool_right = sum(answer in found for answer, found in zip(gold, results, strict=True))
    answer_right = sum(e["final_answer"] == answer for e, answer in zip(episodes, gold, strict=True))
    first = episodes[0]
    calls = " ; ".join(f"{s['action']}: {s['action_input']} -> {(s['observation'] or {}).get('text', '')}"
                       for s in first["steps"])
    mark = "right" if first["final_answer"] == gold[0] else f"wrong, expected {gold[0]}"
    return [f"{first['user']!r}: {calls or 'no tool call'} -> final answer {first['final_answer']} ({mark})",
            f"held-out sums: the tool returned the right number for {tool_right}/{len(episodes)}, "
            f"the final answer was right for {answer_right}/{len(episodes)}"]


def specialize(run: Path) -> list[str]:
    manifest = _json(run / "math" / "manifest.json")
    scores = manifest["evaluation"]["scores"]
    shown = ", ".join(f"{name} {s['exact_match']:.1%}" for name, s in scores.items())
    return [f"Math-Qwen-Chat: held-out math exact match ({manifest['evaluation']['items']} questions): {shown}"]


STAGES = {"prepare": ("data preparation", prepare), "tokenizer": ("tokenizer", tokenizer),
          "pretrain": ("pretrain", pretrain), "context": ("context extension", context), "sft": ("SFT", sft),
          "chat": ("chat", chat), "alignment": ("reward model, PPO, DPO", alignment), "eval": ("eval", evaluate),
          "tool": ("tool call", tool), "specialize": ("specialisation", specialize)}


def table(run: Path) -> list[str]:
    """The closing summary: each stage in the order demo.sh ran it, its wall and CPU seconds and its numbers."""
    rows = [line.split("\t") for line in (run / "times.tsv").read_text().splitlines()]
    width = max(len(STAGES[key][0]) for key, _, _ in rows)
    out = [f"{'stage':<{width}}  {'wall':>6}  {'CPU':>6}  measured"]
    for key, wall, cpu in rows:
        title, numbers = STAGES[key]
        for i, line in enumerate(numbers(run)):
            left = f"{title:<{width}}  {float(wall):5.0f}s  {float(cpu):5.0f}s" if i == 0 else " " * (width + 16)
            out.append(f"{left}  {line}")
    total_wall, total_cpu = (sum(float(row[i]) for row in rows) for i in (1, 2))
    out.append(f"{'total':<{width}}  {total_wall:5.0f}s  {total_cpu:5.0f}s  "
               f"(CPU/wall {total_cpu / total_wall:.2f}: about 1.8 on 2 idle cores, lower when they are shared)")
    return out


def main(argv: list[str]) -> int:
    run = Path(argv[0])
    lines = STAGES[argv[1]][1](run) if len(argv) > 1 else table(run)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

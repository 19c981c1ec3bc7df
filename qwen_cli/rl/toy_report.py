"""The headline numbers of the toy alignment run (``make demo-rlhf``) and the floors they must clear.

``python -m qwen_cli.rl.toy_report RUN_DIR [--no-floors]`` reads what the stages wrote under
``RUN_DIR`` (the reward model's ``reward/scores.json``, PPO's ``ppo/metrics.jsonl``, DPO's
``dpo/scores.json``), prints one line per number (also, without a floor, the reward model's accuracy
on the policy's own held-out samples and its ranking of PPO's samples at the start and end) and exits 1 when one falls below its floor, so a
regression of any stage turns the demo red (``--no-floors``: print only, for ``demo_rlhf.sh --short``):

- SFT: held-out gold exact match inside ``SFT_RANGE`` (learned something, room left above);
- reward model: held-out pairwise accuracy (gold sum vs near miss) at least ``RM_FLOOR``;
- PPO: held-out gold exact match up by at least ``PPO_GAIN``, with the KL to the reference
  (summed over a response, batch mean) never above ``KL_CEILING``;
- DPO: held-out gold exact match up by more than ``DPO_GAIN``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SFT_RANGE = (0.20, 0.70)
RM_FLOOR = 0.90
PPO_GAIN = 0.10
KL_CEILING = 1.0
DPO_GAIN = 0.0
NEAR_MISSES, SAMPLES = "pairs", "samples_test"  # the reward model's held-out sets (pairs/test.jsonl, samples_test.jsonl)
WINDOW = 5  # PPO steps averaged for the reward model's ranking of the policy's samples, first and last


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None  # None: no batch held both a right and a wrong sample


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def measure(run_dir: Path) -> dict[str, float | None]:
    """The numbers, from the files the stages wrote."""
    sets = json.loads((run_dir / "reward" / "scores.json").read_text())[-1]["sets"]
    steps = [json.loads(line) for line in (run_dir / "ppo" / "metrics.jsonl").read_text().splitlines()]
    gold = [s["eval_gold"] for s in steps if "eval_gold" in s]
    ranking = [s["reward_gold_ranking"] for s in steps if "reward_gold_ranking" in s]
    dpo = json.loads((run_dir / "dpo" / "scores.json").read_text())
    return {"sft_gold": gold[0], "rm_accuracy": sets[NEAR_MISSES]["accuracy"],
            "rm_sample_accuracy": sets[SAMPLES]["accuracy"], "ppo_gold": gold[-1],
            "ppo_max_kl": max(s["kl"] for s in steps if "kl" in s),
            "ppo_ranking_first": _mean(ranking[:WINDOW]), "ppo_ranking_last": _mean(ranking[-WINDOW:]),
            "dpo_gold_before": dpo[0]["gold"]["gold"], "dpo_gold": dpo[1]["gold"]["gold"]}


def failures(m: dict[str, float]) -> list[str]:
    """One line per number below its floor (empty: all clear)."""
    checks = [
        (SFT_RANGE[0] <= m["sft_gold"] <= SFT_RANGE[1], f"SFT gold {m['sft_gold']:.1%} outside {SFT_RANGE}"),
        (m["rm_accuracy"] >= RM_FLOOR, f"reward-model accuracy {m['rm_accuracy']:.1%} < {RM_FLOOR:.0%}"),
        (round(m["ppo_gold"] - m["sft_gold"], 9) >= PPO_GAIN, f"PPO gain {m['ppo_gold'] - m['sft_gold']:+.1%} < {PPO_GAIN:.0%}"),
        (m["ppo_max_kl"] <= KL_CEILING, f"PPO KL {m['ppo_max_kl']:.3f} > {KL_CEILING}"),
        (m["dpo_gold"] - m["dpo_gold_before"] > DPO_GAIN,
         f"DPO gain {m['dpo_gold'] - m['dpo_gold_before']:+.1%} not above {DPO_GAIN:.0%}"),
    ]
    return [message for ok, message in checks if not ok]


def main(argv: list[str]) -> int:
    check = "--no-floors" not in argv
    paths = [a for a in argv if a != "--no-floors"]
    run_dir = Path(paths[0] if paths else "runs/arith")
    m = measure(run_dir)
    print(f"held-out gold exact match after SFT:          {m['sft_gold']:.1%}\n"
          f"reward model, held-out gold vs near miss:     {m['rm_accuracy']:.1%}\n"
          f"reward model, held-out right vs wrong sample: {m['rm_sample_accuracy']:.1%} (the policy's own replies)\n"
          f"held-out gold exact match after PPO:          {m['ppo_gold']:.1%} "
          f"({m['ppo_gold'] - m['sft_gold']:+.1%}; max KL to the reference {m['ppo_max_kl']:.3f})\n"
          f"PPO samples ranked right over wrong:          {_percent(m['ppo_ranking_first'])} -> "
          f"{_percent(m['ppo_ranking_last'])} "
          f"(first and last {WINDOW} steps; a fall means the policy exploits the reward model)\n"
          f"held-out gold exact match after DPO:          {m['dpo_gold']:.1%} "
          f"({m['dpo_gold'] - m['dpo_gold_before']:+.1%})")
    failed = failures(m) if check else []
    for line in failed:
        print(f"REGRESSION: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

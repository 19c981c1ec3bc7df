"""The PNG of a PPO run's curves (reward raw and normalised, KL, value loss, clip fractions, length, gold on
the samples, the reward model's ranking of right over wrong samples, held-out gold)."""

from __future__ import annotations

import json
from pathlib import Path

PANELS = (("reward", "reward (raw)"), ("reward_norm", "reward (normalised)"), ("kl", "KL to reference"),
          ("value_loss", "value loss"), ("policy_clipfrac", "policy clip fraction"),
          ("value_clipfrac", "value clip fraction"), ("response_len", "response length"), ("gold", "gold exact match"),
          ("reward_gold_ranking", "reward model ranks right over wrong"), ("eval_gold", "held-out gold (greedy)"))


def plot_curves(metrics_path: Path, target: Path) -> None:
    """One panel per metric present in ``metrics.jsonl``, written atomically to ``target``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qwen_cli.fsutil import atomic_file

    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    panels = [(key, title) for key, title in PANELS if any(r.get(key) is not None for r in records)]
    if not panels:
        return
    columns = 4
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_file(target, mode="wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)

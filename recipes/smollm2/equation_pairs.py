"""Arithmetic pairs with replies written as equations, for DPO of SmolLM2 (recipes/smollm2/dpo.toml).

    python recipes/smollm2/equation_pairs.py runs/smollm2/pairs runs/smollm2/equation_pairs

``qwen rlhf pairs arithmetic`` answers "What is 19 * 6?" with the bare number ("114" vs "108").
DPO on those taught SmolLM2-135M to answer with a bare number, and it cannot do the sums that way
(held-out gold 8% -> 7%). Here each reply restates the question ("19 * 6 = 114" vs "19 * 6 = 108"),
the way the model already answers when it answers well; the gold number stays the reply's last.
Writes train.jsonl and test.jsonl rewritten, prompts_test.jsonl copied.
"""

import json
import re
import shutil
import sys
from pathlib import Path

QUESTION = re.compile(r"What is (\d+ [-+*] \d+)\?")


def equation(prompt: str, reply: str) -> str:
    """``reply`` written as ``<the question's expression> = reply``."""
    return f"{QUESTION.fullmatch(prompt).group(1)} = {reply}"


def main(source: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=False)
    for name in ("train.jsonl", "test.jsonl"):
        pairs = [json.loads(line) for line in (source / name).read_text().splitlines()]
        rows = [{**p, "chosen": equation(p["prompt"], p["chosen"]), "rejected": equation(p["prompt"], p["rejected"])}
                for p in pairs]
        (out / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    shutil.copy(source / "prompts_test.jsonl", out / "prompts_test.jsonl")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

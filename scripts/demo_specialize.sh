#!/usr/bin/env bash
# The tiny specialisation pipeline (README: `qwen specialize`): Code-Qwen and Math-Qwen-Chat at toy
# scale from the models `make demo` leaves in runs/tiny/. Code: continued pretraining on unseen
# stdlib code at 4x the context, then two SFT stages; math: SFT on mathematics-dataset problems at
# 1024 tokens. Both decontaminate their data first and write their measurements to the manifest.
set -euo pipefail
cd "$(dirname "$0")/.."

for need in runs/tiny/pretrain/final runs/tiny/sft/final runs/tiny/shards; do
  if [ ! -d "$need" ]; then
    echo "error: $need is missing: run 'make demo' first (it trains the tiny base and chat models)" >&2
    exit 2
  fi
done
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/2 Code-Qwen: continued pretraining at 512 tokens, then SFT (explain, implement) (recipes/tiny/code.toml)"
qwen specialize code recipes/tiny/code.toml --out runs/tiny/code --overwrite

step "2/2 Math-Qwen-Chat: SFT on generated math Q/A at 1024 tokens (recipes/tiny/math.toml)"
qwen specialize math recipes/tiny/math.toml --out runs/tiny/math --overwrite

step "summary (runs/tiny/{code,math}/manifest.json)"
python - <<'PY'
import json
for kind in ("code", "math"):
    m = json.load(open(f"runs/tiny/{kind}/manifest.json"))
    d = m["decontamination"]
    print(f"{kind}: decontamination {d['ngram']}-grams vs {d['test_items']}: removed {d['removed']} of {d['checked']}")
    for model, score in m["evaluation"]["scores"].items():
        shown = {k: round(v, 3) for k, v in score.items()} if kind == "code" else f"{score['exact_match']:.1%}"
        print(f"  {model:15} {shown}")
PY

#!/usr/bin/env bash
# The tiny alignment pipeline (README: `qwen rlhf`), from the chat model `make demo` leaves in
# runs/tiny/: comparison pairs from real data, a reward model (preference-model pretraining, then
# fine-tuning; report §3.2.1) and PPO against it (report §3.2.2). About 4-5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

for need in runs/tiny/sft/final runs/tiny/shards; do
  if [ ! -d "$need" ]; then
    echo "error: $need is missing: run 'make demo' first (it trains the tiny chat model)" >&2
    exit 2
  fi
done
rm -rf runs/tiny/pairs runs/tiny/reward runs/tiny/ppo
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/3 comparison pairs from real data: chatterbot replies vs mismatched ones; arithmetic answers vs near misses"
qwen rlhf pairs chat-mismatch --data-dir tests/fixtures/chatterbot_en.jsonl --out runs/tiny/pairs/chat
qwen rlhf pairs arithmetic --limit 1000 --out runs/tiny/pairs/arithmetic

step "2/3 reward model: preference-model pretraining on the chat pairs, then fine-tuning on arithmetic (recipes/tiny/reward.toml)"
qwen rlhf reward recipes/tiny/reward.toml --out runs/tiny/reward

step "3/3 PPO: the chat model against the reward model, gold exact match on held-out questions (recipes/tiny/ppo.toml)"
qwen rlhf ppo recipes/tiny/ppo.toml --out runs/tiny/ppo

printf '\nDone. Reward model: runs/tiny/reward/rm/final (Qwen2ForSequenceClassification; scores in\nruns/tiny/reward/scores.json); PPO policy: runs/tiny/ppo/final (Qwen2 chat model), curves: runs/tiny/ppo/curves.png.\n'

#!/usr/bin/env bash
# The alignment half of the report on a toy task a 0.9M-parameter model learns in minutes on 2 CPU
# cores: two-digit sums ("What is 79 + 15?"), scored by exact match on 900 held-out questions no stage
# ever trains on. Pretraining and SFT teach some of the arithmetic; a reward model learns to tell the
# gold sum from a near miss (report §3.2.1); PPO against it (§3.2.2) and DPO on the same pairs raise
# held-out gold exact match. The last step prints every measured number and fails when one regresses
# (qwen_cli/rl/toy_report.py). Everything lands in runs/arith/; needs nothing from `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=runs/arith
rm -rf "$RUN"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/7 9,000 distinct two-digit sums: 8,100 for training (text, chat, gold vs near-miss pairs), 900 held out"
qwen rlhf pairs addition --limit 9000 --out $RUN/pairs

step "2/7 a Qwen-style BPE vocabulary (digits split) and token shards of the training sums"
qwen tokenize train --corpus $RUN/pairs/text.jsonl --vocab-size 512 --out $RUN/tokenizer
qwen tokenize encode --tokenizer $RUN/tokenizer --input $RUN/pairs/text.jsonl --out $RUN/shards --val-fraction 0.05

step "3/7 pretraining (recipes/tiny/arith_pretrain.toml)"
qwen pretrain recipes/tiny/arith_pretrain.toml --out $RUN/pretrain

step "4/7 ChatML fine-tuning on the training sums (recipes/tiny/arith_sft.toml)"
qwen sft recipes/tiny/arith_sft.toml --out $RUN/sft

step "5/7 reward model from the pretrained model: gold sum vs near miss (recipes/tiny/arith_reward.toml)"
qwen rlhf reward recipes/tiny/arith_reward.toml --out $RUN/reward

step "6/7 PPO against the reward model; held-out gold exact match before and after (recipes/tiny/arith_ppo.toml)"
qwen rlhf ppo recipes/tiny/arith_ppo.toml --out $RUN/ppo

step "7/7 DPO on the reward model's pairs; held-out gold exact match before and after (recipes/tiny/arith_dpo.toml)"
qwen rlhf dpo recipes/tiny/arith_dpo.toml --out $RUN/dpo

step "measured (floors in qwen_cli/rl/toy_report.py)"
python -m qwen_cli.rl.toy_report $RUN
printf '\nModels: %s/{sft,ppo,dpo}/final (chat), %s/reward/rm/final (reward model); PPO curves: %s/ppo/curves.png\n' \
  "$RUN" "$RUN" "$RUN"

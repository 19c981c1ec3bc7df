#!/usr/bin/env bash
# The alignment half of the report on a toy task a 0.9M-parameter model learns in minutes on 2 CPU
# cores: two-digit sums ("What is 79 + 15?"), answered least significant digit first ("49"), scored
# by exact match on 900 held-out questions no stage ever trains on. Pretraining and SFT teach the
# arithmetic; PPO and DPO start from the first SFT checkpoint with 25% of 200 training sums right
# (part-way: room above it). A reward model learns to tell the gold sum from a near miss and from that
# checkpoint's own wrong replies (report §3.2.1); PPO against it (§3.2.2) and DPO on the near-miss
# pairs must raise held-out gold exact match. The last step prints every measured number and fails when
# one misses its floor (qwen_cli/rl/toy_report.py; docs/rlhf.md has the last measured run). Everything
# lands in runs/arith/; needs nothing from `make demo`.
#
#   bash scripts/demo_rlhf.sh           # the full run (make demo-rlhf)
#   bash scripts/demo_rlhf.sh --short   # SFT, reward model, PPO and DPO cut short (~2.5 min), into
#                                       # runs/arith-short; prints the numbers without checking them (the reward
#                                       # model stays near chance at this length, so PPO has nothing to climb)
set -euo pipefail
cd "$(dirname "$0")/.."

SHORT=0
[[ "${1:-}" == "--short" ]] && SHORT=1
RUN=runs/arith
[[ $SHORT == 1 ]] && RUN=runs/arith-short
rm -rf "$RUN"
mkdir -p "$RUN/recipes"
for stage in pretrain sft reward ppo dpo; do  # the recipes, pointed at $RUN
  sed "s#runs/arith/#$RUN/#g" "recipes/tiny/arith_$stage.toml" > "$RUN/recipes/$stage.toml"
done
short_set() { [[ $SHORT == 1 ]] && printf -- '--set %s ' "$@"; true; }  # the short run's overrides
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/8 9,000 distinct two-digit sums: 8,100 for training (text, chat, gold vs 8 near misses each), 900 held out"
qwen rlhf pairs addition --limit 9000 --per-question 8 --out $RUN/pairs

step "2/8 a Qwen-style BPE vocabulary (digits split) and token shards of the training sums"
qwen tokenize train --corpus $RUN/pairs/text.jsonl --vocab-size 512 --out $RUN/tokenizer
qwen tokenize encode --tokenizer $RUN/tokenizer --input $RUN/pairs/text.jsonl --out $RUN/shards --val-fraction 0.05

step "3/8 pretraining (recipes/tiny/arith_pretrain.toml)"
qwen pretrain $RUN/recipes/pretrain.toml --out $RUN/pretrain $(short_set train.val_every=0 checkpoint.every=0)

step "4/8 ChatML fine-tuning on the training sums (recipes/tiny/arith_sft.toml)"
qwen sft $RUN/recipes/sft.toml --out $RUN/sft $(short_set train.steps=300 train.val_every=0)

step "5/8 PPO's and DPO's start: the first SFT checkpoint with 25% of 200 training sums right (room above it)"
START=$(qwen rlhf gold $RUN/sft/checkpoints/step_* --prompts $RUN/pairs/prompts.jsonl --limit 200 --system "" \
  --max-new-tokens 4 --first-at-least 0.25) || { [[ $SHORT == 1 ]] && START=$RUN/sft/final; }
echo "start: $START"
echo "its own replies, judged by the known answers: on the training questions for the reward model (report §3.2.1),"
echo "on the held-out questions for scoring it"
qwen rlhf sample-pairs $START --prompts $RUN/pairs/prompts.jsonl \
  --out $RUN/samples_train.jsonl --samples 4 --max-new-tokens 4 --system "" --seed 1 $([[ $SHORT == 1 ]] && echo --limit 1000)
qwen rlhf sample-pairs $START --prompts $RUN/pairs/prompts_test.jsonl \
  --out $RUN/samples_test.jsonl --samples 4 --max-new-tokens 4 --system ""

step "6/8 reward model from the SFT model plus two new layers: gold sum vs near misses and vs the start's wrong samples (recipes/tiny/arith_reward.toml)"
qwen rlhf reward $RUN/recipes/reward.toml --out $RUN/reward $(short_set rm.steps=60)

step "7/8 PPO against the reward model; held-out gold exact match before and after (recipes/tiny/arith_ppo.toml)"
qwen rlhf ppo $RUN/recipes/ppo.toml --out $RUN/ppo \
  --set models.policy=$START $(short_set train.steps=8 ppo.value_only_steps=2 ppo.eval_limit=100)

step "8/8 DPO on the near-miss pairs; held-out gold exact match before and after (recipes/tiny/arith_dpo.toml)"
qwen rlhf dpo $RUN/recipes/dpo.toml --out $RUN/dpo \
  --set init.checkpoint=$START $(short_set train.steps=30 data.eval_limit=100)

step "measured (floors in qwen_cli/rl/toy_report.py)"
if [[ $SHORT == 1 ]]; then
  echo "(--short: SFT 300 steps, the reward model 60, PPO 8, DPO 30; the numbers show the stages run, not the floors)"
  python -m qwen_cli.rl.toy_report $RUN --no-floors
else
  python -m qwen_cli.rl.toy_report $RUN
fi
printf '\nModels: %s/{sft,ppo,dpo}/final (chat), %s/reward/rm/final (reward model); PPO curves: %s/ppo/curves.png\n' \
  "$RUN" "$RUN" "$RUN"

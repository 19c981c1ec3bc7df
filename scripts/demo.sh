#!/usr/bin/env bash
# The whole lineage of the Qwen (v1) report in one run, at toy scale on 2 CPU cores (README quick
# start): data preparation, a Qwen-style tokenizer, pretraining, context extension, SFT and chat,
# a reward model with PPO and DPO, lm-eval, a tool call run in the sandbox, and a specialisation.
# Each step prints what it measured (scripts/demo_report.py reads it back from the step's files) and
# the run ends with one table of every step's time and numbers. Some steps are shorter versions of
# the siblings, which stay for the longer runs: `make demo-rlhf` (scripts/demo_rlhf.sh) and
# `make demo-specialize` (scripts/demo_specialize.sh). Everything lands in runs/tiny/ and
# runs/arith-short/.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=runs/tiny
STDLIB=$(python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
rm -rf "$RUN"
mkdir -p "$RUN"

STEPS=10
done_steps=0
# cpu_ms FILE: the CPU time (user + system, ms) of all finished children, from `times` output in FILE
cpu_ms() {
  awk 'NR == 2 { for (i = 1; i <= NF; i++) { split($i, t, "m"); ms += (t[1] * 60 + t[2]) * 1000 } printf "%d", ms }' "$1"
}
# step KEY "what it does" COMMAND...: a numbered header, the command, its wall and CPU time into
# $RUN/times.tsv (CPU/wall is about 1.8 on 2 idle cores; less means the cores were shared), then what it measured
step() {
  local key=$1 title=$2
  shift 2
  done_steps=$((done_steps + 1))
  printf '\n\033[1m== %d/%d %s\033[0m\n' "$done_steps" "$STEPS" "$title"
  local start=${EPOCHREALTIME/./} cpu
  times > "$RUN/cpu.txt"
  cpu=$(cpu_ms "$RUN/cpu.txt")
  "$@"
  local ms=$(( (${EPOCHREALTIME/./} - start) / 1000 ))
  times > "$RUN/cpu.txt"
  cpu=$(( $(cpu_ms "$RUN/cpu.txt") - cpu ))
  printf '%s\t%d.%03d\t%d.%03d\n' "$key" $((ms / 1000)) $((ms % 1000)) $((cpu / 1000)) $((cpu % 1000)) >> "$RUN/times.tsv"
  printf '\033[1mmeasured\033[0m (%d s, CPU %d s):\n' $((ms / 1000)) $((cpu / 1000))
  python scripts/demo_report.py "$RUN" "$key" | sed 's/^/  /'
}

# The tool step's training traces run their code in the sandbox, which waits on process start-up
# rather than the CPU: generate them in the background from the start.
python -m qwen_cli.agent.traces --compact --out "$RUN/traces" --train 1200 --test 20 --seed 0 \
  > "$RUN/traces.log" 2>&1 &
TRACES=$!

prepare_corpus() {
  local sources="" pkg
  for pkg in asyncio email json http urllib logging concurrent importlib xml multiprocessing collections unittest; do
    sources+="\"$STDLIB/$pkg\","
  done
  qwen tokenize prepare recipes/tiny/prepare.toml --out "$RUN/clean" --workers 2 \
    --set "input.sources=[{name=\"code\", paths=[${sources%,}], quality=false}]"
}

train_tokenizer() {
  qwen tokenize train --corpus "$RUN/clean/data" --vocab-size 8192 --out "$RUN/tokenizer"
  qwen tokenize encode --tokenizer "$RUN/tokenizer" --input "$RUN/clean/data" --out "$RUN/shards" --val-fraction 0.05
}

context_sweep() {
  local held_out=() f
  for f in typing.py inspect.py argparse.py dataclasses.py pathlib.py tarfile.py enum.py ast.py; do
    held_out+=("$STDLIB/$f")
  done
  qwen extend-context "$RUN/pretrain/final" --corpus "${held_out[@]}" --tokens 4096 --plot "$RUN/context.png" \
    --json > "$RUN/context.json"
}

chat_once() {
  echo "Hello, how are you?" | qwen chat "$RUN/sft/final" --max-new-tokens 32 | tee "$RUN/chat.txt"
}

# lm-eval's math401 task (the prompt is the question itself) on 200 of the 900 held-out sums of the
# alignment step, which no stage trained on
lm_eval_sums() {
  mkdir -p "$RUN/eval-data/math401"
  python -c 'import json, sys
for line in sys.stdin:
    item = json.loads(line)
    print(json.dumps({"query": item["prompt"], "response": item["answer"]}))' \
    < runs/arith-short/pairs/prompts_test.jsonl > "$RUN/eval-data/math401/test.jsonl"
  qwen eval runs/arith-short/pretrain/final --tasks math401 --data-dir "$RUN/eval-data" --limit 200 --out "$RUN/eval.json"
}

tool_call() {
  wait "$TRACES"
  tail -n 1 "$RUN/traces.log"
  qwen sft recipes/tiny/tool_sft.toml --out "$RUN/tool"
  python -c 'import json, sys
for line in sys.stdin:
    print(json.loads(line)["question"], "/reset", sep="\n")' < "$RUN/traces/test.jsonl" |
    qwen chat "$RUN/tool/final" --tools python --json --max-new-tokens 40 > "$RUN/tool/episodes.jsonl"
}

step prepare "clean the corpus (report §2.1 on datatrove: language ID, exact + MinHash dedup, filters; recipes/tiny/prepare.toml)" \
  prepare_corpus
step tokenizer "an 8K Qwen-style BPE vocabulary on the cleaned stdlib (digits split, Qwen specials), then shuffled uint32 shards" \
  train_tokenizer
step pretrain "pretrain the tiny model (recipes/tiny/pretrain.toml)" \
  qwen pretrain recipes/tiny/pretrain.toml --out "$RUN/pretrain"
step context "context extension: perplexity from T to 16·T on held-out stdlib files (report §2.3, Table 3)" \
  context_sweep
step sft "ChatML fine-tuning on chatterbot-corpus (report §3.1; recipes/tiny/sft.toml)" \
  qwen sft recipes/tiny/sft.toml --out "$RUN/sft"
step chat "chat with the result (one message on stdin)" \
  chat_once
step alignment "reward model, PPO and DPO on two-digit sums (report §3.2; scripts/demo_rlhf.sh --short, in runs/arith-short)" \
  bash scripts/demo_rlhf.sh --short
step eval "lm-eval on the arithmetic base model: held-out sums (report §2.4's harness; qwen eval)" \
  lm_eval_sums
step tool "tool use (report §3.4): fine-tune the chat model on ReAct traces run in the sandbox, then answer held-out sums with qwen chat --tools python" \
  tool_call
step specialize "Math-Qwen-Chat: SFT on generated math Q/A, held-out exact match (report §5; recipes/tiny/math.toml cut to 3,000 problems, 40 steps at 256 tokens)" \
  qwen specialize math recipes/tiny/math.toml --out "$RUN/math" --overwrite --set math.per_module=300 \
  --set evaluate.math_items=300 --set math-sft.train.steps=40 --set math-sft.data.seq_len=256 \
  --set math-sft.train.micro_batch_size=16

printf '\n\033[1m== summary: each step'"'"'s wall and CPU time and what it measured\033[0m\n'
python scripts/demo_report.py "$RUN"
printf '\nModels: %s/{pretrain,sft,tool}/final, %s/math/stages/math-sft/final, runs/arith-short/{sft,ppo,dpo}/final;\n' "$RUN" "$RUN"
printf 'longer versions: make demo-rlhf, make demo-specialize (Code-Qwen too).\n'

#!/usr/bin/env bash
# The tiny end-to-end pipeline (README quick start): a Qwen-style tokenizer trained on the
# Python standard library, token shards, pretraining, ChatML fine-tuning, a reply, and the
# context-extension sweep (perplexity to 16x the training length, report Table 3). Its siblings
# continue from these models: `make demo-rlhf` (reward model + PPO), `make demo-specialize`
# (Code-Qwen, Math-Qwen-Chat). Runs on 2 CPU cores in under 10 minutes; everything lands in runs/tiny/.
set -euo pipefail
cd "$(dirname "$0")/.."

STDLIB=$(python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
CORPUS=()
for pkg in asyncio email json http urllib logging concurrent importlib xml multiprocessing collections unittest; do
  CORPUS+=("$STDLIB/$pkg")
done

rm -rf runs/tiny
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "0/6 clean the corpus (report §2.1 on datatrove: language ID, exact + MinHash dedup, filters; recipes/tiny/prepare.toml)"
SOURCES=$(printf '"%s",' "${CORPUS[@]}")
qwen tokenize prepare recipes/tiny/prepare.toml --out runs/tiny/clean --workers 2 \
  --set "input.sources=[{name=\"code\", paths=[${SOURCES%,}], quality=false}]"

step "1/6 train a 8K Qwen-style BPE vocabulary on the cleaned stdlib (digits split, Qwen specials)"
qwen tokenize train --corpus runs/tiny/clean/data --vocab-size 8192 --out runs/tiny/tokenizer

step "2/6 encode the corpus into shuffled uint32 shards with a validation split"
qwen tokenize encode --tokenizer runs/tiny/tokenizer --input runs/tiny/clean/data --out runs/tiny/shards --val-fraction 0.05

step "3/6 pretrain the tiny model (recipes/tiny/pretrain.toml)"
qwen pretrain recipes/tiny/pretrain.toml --out runs/tiny/pretrain

step "4/6 ChatML fine-tuning on chatterbot-corpus (recipes/tiny/sft.toml)"
qwen sft recipes/tiny/sft.toml --out runs/tiny/sft

step "5/6 chat with the result (one message on stdin)"
echo "Hello, how are you?" | qwen chat runs/tiny/sft/final --max-new-tokens 32

step "6/6 context extension: perplexity from T to 16·T on held-out stdlib files (report Table 3)"
HELD_OUT=()
for f in typing.py inspect.py argparse.py dataclasses.py pathlib.py tarfile.py enum.py ast.py; do
  HELD_OUT+=("$STDLIB/$f")
done
qwen extend-context runs/tiny/pretrain/final --corpus "${HELD_OUT[@]}" --tokens 4096 --plot runs/tiny/context.png

printf '\nDone. Checkpoints: runs/tiny/pretrain/final, runs/tiny/sft/final (Hugging Face Qwen2 layout);\ncontext-extension plot: runs/tiny/context.png. Next: make demo-rlhf, make demo-specialize.\n'

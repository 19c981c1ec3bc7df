#!/usr/bin/env bash
# Effect of the prepare pipeline on the tiny pretraining run: same tokenizer, same steps (tokens),
# a duplicated "dirty" stdlib corpus vs its prepared version; loss on held-out stdlib files.
# Usage: bash bench/prepare_effect.sh [WORK_DIR]   (default runs/prepare-effect; needs qwen on PATH)
set -euo pipefail
cd "$(dirname "$0")/.."
E=${1:-runs/prepare-effect}
export OMP_NUM_THREADS=1
Q=qwen
STD=$(python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
rm -rf $E/raw $E/clean $E/tok $E/shards_* $E/pt_*
mkdir -p $E/raw
python - "$STD" "$E/raw" <<'PY'
import random, sys, pathlib
std, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
rng = random.Random(0)
files = [p for pkg in "asyncio email json http urllib logging concurrent importlib xml multiprocessing collections unittest".split()
         for p in sorted((std / pkg).rglob("*.py")) if "__pycache__" not in p.parts and p.stat().st_size > 0]
n = 0
for p in files:
    text = p.read_text(encoding="utf-8")
    name = "_".join(p.relative_to(std).parts)
    (out / name).write_text(text)
    if rng.random() < 0.3:                       # 30% of files: 3 exact copies (re-indented) + 1 near copy
        for k in range(3):
            (out / f"dup{k}_{name}").write_text(text.replace("\n", "\n\n") if k else text + "\n\n")
        words = text.split(" ")
        for i in rng.sample(range(len(words)), max(1, len(words) // 50)):
            words[i] = "x"
        (out / f"near_{name}").write_text(" ".join(words))
        n += 1
print(len(files), "files,", n, "duplicated")
PY
$Q tokenize prepare recipes/tiny/prepare.toml --out $E/clean --workers 2 \
  --set "input.sources=[{name=\"code\", paths=[\"$E/raw\"], quality=false}]"
$Q tokenize train --corpus $E/clean/data --vocab-size 8192 --out $E/tok
$Q tokenize encode --tokenizer $E/tok --input $E/raw --out $E/shards_raw --val-fraction 0.02
$Q tokenize encode --tokenizer $E/tok --input $E/clean/data --out $E/shards_clean --val-fraction 0.02
for v in raw clean; do
  $Q pretrain recipes/tiny/pretrain.toml --out $E/pt_$v --set data.shards=$E/shards_$v > $E/pt_$v.log 2>&1
done
HELD=()
for f in typing.py inspect.py argparse.py dataclasses.py pathlib.py tarfile.py enum.py ast.py; do HELD+=("$STD/$f"); done
for v in raw clean; do
  python bench/bench_prepare.py heldout --model $E/pt_$v/final --files "${HELD[@]}"
done

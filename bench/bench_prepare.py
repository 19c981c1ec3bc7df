"""Measurements for ``qwen tokenize prepare`` (report §2.1) on real data available offline.

    python bench/bench_prepare.py minhash   --corpus DIR [--sample 400]    # LSH vs exact Jaccard
    python bench/bench_prepare.py langid    --chatterbot DIR               # per-language accuracy
    python bench/bench_prepare.py throughput --corpus DIR [--rounds 3] [--workers 1]
    python bench/bench_prepare.py extract   --corpus DIR                   # trafilatura vs resiliparse
    python bench/bench_prepare.py heldout   --model CKPT --files F...      # loss on held-out text

extract: on Sphinx HTML (the Python docs), the words of ``<div role="main">`` are the page's
main content; each extractor's word precision and recall against them (multisets) and its speed.

minhash: datatrove's own shingles and signatures (the pipeline's MinhashConfig) for a sample of
documents plus one planted near-copy of each (k random words replaced, k = 1..12, so true
similarities spread across the threshold); a pair is a candidate when it shares an LSH band.
Precision and recall are against exact Jaccard of the same shingle sets >= the threshold.

langid: py3langid (the pipeline's LanguageID step) on every chatterbot-corpus dialogue line of
>= 20 characters, per language folder; the folder name maps to an ISO code below.

throughput: the same recipe run alternately by ``qwen tokenize prepare`` and by datatrove alone:
the same step lists (its stock readers and extractor sandbox, Gopher filters, exact and MinHash dedup and
writers; py3langid and the word list, which datatrove has no offline block for) handed straight to
``LocalPipelineExecutor``, without our UTF-8 pre-check, progress, manifest and atomic output —
interleaved rounds, MB/s of input per core, and the ratio of the two.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from itertools import combinations
from pathlib import Path

CHATTERBOT_ISO = {"bengali": "bn", "chinese": "zh", "dutch": "nl", "english": "en", "french": "fr", "german": "de",
                  "hebrew": "he", "hindi": "hi", "indonesian": "id", "italian": "it", "japanese": "ja",
                  "korean": "ko", "marathi": "mr", "oriya": "or", "persian": "fa", "portuguese": "pt",
                  "russian": "ru", "spanish": "es", "swedish": "sv", "tamil": "ta", "telugu": "te", "thai": "th",
                  "traditionalchinese": "zh", "turkish": "tr", "ukrainian": "uk", "urdu": "ur", "yoruba": "yo",
                  "hinglish": "hi"}


def _texts(corpus: Path, limit: int, seed: int) -> list[str]:
    files = sorted(p for p in corpus.rglob("*") if p.is_file() and p.suffix in (".txt", ".rst", ".py", ".html"))
    random.Random(seed).shuffle(files)
    out = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        if len(text.split()) >= 100:
            out.append(text)
        if len(out) == limit:
            break
    return out


def _main_words(html: str) -> list[str]:
    import lxml.html

    main = lxml.html.fromstring(html).xpath('//div[@role="main"]')
    return main[0].text_content().lower().split() if main else []


def extract(args) -> None:
    from collections import Counter

    import trafilatura
    from resiliparse.extract.html2text import extract_plain_text

    engines = {"trafilatura (datatrove's extractor settings)":
               lambda h: trafilatura.extract(h, favor_precision=True, include_comments=False, deduplicate=False) or "",
               "resiliparse main_content": lambda h: extract_plain_text(h, main_content=True)}
    pages = [p.read_text(encoding="utf-8") for p in sorted(Path(args.corpus).glob("*.html"))]
    pages = [(h, Counter(_main_words(h))) for h in pages]
    size = sum(len(h.encode()) for h, _ in pages)
    for name, fn in engines.items():
        start, hit, out_words, main_words = time.perf_counter(), 0, 0, 0
        for html, truth in pages:
            got = Counter(fn(html).lower().split())
            hit += sum((got & truth).values())
            out_words, main_words = out_words + sum(got.values()), main_words + sum(truth.values())
        seconds = time.perf_counter() - start
        print(f"{name:46s} precision {hit / max(out_words, 1):.3f} recall {hit / max(main_words, 1):.3f} "
              f"{size / 1e6 / seconds:6.2f} MB/s ({len(pages)} pages, {size / 1e6:.1f} MB)")


def minhash(args) -> None:
    import numpy as np
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig

    from qwen_cli.prepare.stages import NORM

    config = MinhashConfig(n_grams=5, num_buckets=args.bands, hashes_per_bucket=args.rows, norm_config=NORM)
    step = MinhashDedupSignature(tempfile.mkdtemp(), config=config)
    rng = random.Random(0)
    docs = []
    for text in _texts(Path(args.corpus), args.sample, 0):
        words = text.split()
        copy = list(words)
        for i in rng.sample(range(len(words)), min(len(words), rng.randint(1, 12) * max(1, len(words) // 100))):
            copy[i] = rng.choice(words)
        docs += [text, " ".join(copy)]
    shingles = [set(step.get_shingles(d).ravel().tolist()) for d in docs]
    bands = [tuple(tuple(b) for b in step.get_signature(np.fromiter(s, dtype=np.uint64).reshape(-1, 1)))
             if s else () for s in shingles]
    threshold = (1 / args.bands) ** (1 / args.rows)
    tp = fp = fn = 0
    for i, j in combinations(range(len(docs)), 2):
        if not shingles[i] or not shingles[j]:
            continue
        jaccard = len(shingles[i] & shingles[j]) / len(shingles[i] | shingles[j])
        candidate = any(a == b for a, b in zip(bands[i], bands[j], strict=True))
        similar = jaccard >= threshold
        tp += candidate and similar
        fp += candidate and not similar
        fn += similar and not candidate
    print(json.dumps({"documents": len(docs), "pairs": len(docs) * (len(docs) - 1) // 2, "bands": args.bands,
                      "rows": args.rows, "threshold": round(threshold, 3), "true_pairs": tp + fn,
                      "precision": round(tp / max(tp + fp, 1), 4), "recall": round(tp / max(tp + fn, 1), 4)}))


def langid(args) -> None:
    import yaml
    from datatrove.data import Document

    from qwen_cli.prepare.steps import LanguageID

    step = LanguageID([], 0.0)
    rows, total, right = {}, 0, 0
    for folder in sorted(Path(args.chatterbot).iterdir()):
        if folder.name not in CHATTERBOT_ISO:
            continue
        lines = []
        for path in sorted(folder.glob("*.yml")):
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            for pair in data.get("conversations", []):
                lines += [str(x) for x in pair if isinstance(x, str) and len(x) >= 20]
        hits = 0
        for line in lines:
            doc = Document(line, "x")
            step.filter(doc)
            hits += doc.metadata["language"] == CHATTERBOT_ISO[folder.name]
        rows[folder.name] = {"iso": CHATTERBOT_ISO[folder.name], "lines": len(lines),
                             "accuracy": round(hits / len(lines), 3) if lines else None}
        total, right = total + len(lines), right + hits
    print(json.dumps({"per_language": rows, "overall": round(right / max(total, 1), 4), "lines": total}, indent=1))


def _recipe(corpus: Path, workers: int) -> str:
    return (f'[input]\nsources = [{{ name = "web", paths = ["{corpus}"], format = "auto" }}]\n'
            f'[executor]\nworkers = {workers}\n[quality]\nc4 = false\n')


def _stock_run(corpus: Path, work: Path, workers: int) -> None:
    """The same stages as plain datatrove: stock blocks, one LocalPipelineExecutor per stage."""
    from datatrove.executor import LocalPipelineExecutor

    from qwen_cli.prepare.config import load
    from qwen_cli.prepare.inputs import find_inputs, write_paths_files
    from qwen_cli.prepare.stages import build

    path = work / "r.toml"
    path.write_text(_recipe(corpus, workers))
    r = load(path)
    found = find_inputs(r.input.sources, check_utf8=False)
    tasks = min(found.count, 4 * workers)
    for stage in build(r, work, write_paths_files(found, work / "inputs"), tasks, None, {}):
        LocalPipelineExecutor(stage.pipeline, tasks=stage.tasks, workers=min(workers, stage.tasks),
                              logging_dir=str(work / "logs" / stage.name)).run()


def _ours(corpus: Path, work: Path, workers: int) -> None:
    from qwen_cli.prepare.config import load
    from qwen_cli.prepare.run import prepare

    path = work / "r.toml"
    path.write_text(_recipe(corpus, workers))
    prepare(load(path), work / "out")


def throughput(args) -> None:
    import contextlib
    import os

    corpus = Path(args.corpus)
    size = sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file())
    times: dict[str, list[float]] = {"qwen tokenize prepare": [], "datatrove stock stages": []}
    for _ in range(args.rounds):
        for name, fn in (("qwen tokenize prepare", _ours), ("datatrove stock stages", _stock_run)):
            work = Path(tempfile.mkdtemp())
            with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
                start = time.perf_counter()
                fn(corpus, work, args.workers)
                times[name].append(time.perf_counter() - start)
            shutil.rmtree(work)
    ref = statistics.median(times["datatrove stock stages"])
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:24s} median {med:6.2f} s  {size / 1e6 / med / args.workers:6.3f} MB/s per core  "
              f"ratio to stock {med / ref:5.2f}  (runs: {', '.join(f'{v:.2f}' for v in values)})")
    print(f"input {size / 1e6:.2f} MB, {args.workers} worker(s), {args.rounds} interleaved rounds")


def heldout(args) -> None:
    """Mean next-token loss of a checkpoint over ``--files``, cut into ``--length``-token windows."""
    import math

    import torch

    from qwen_cli.checkpoint import load

    model, tokenizer = load(args.model)
    total = count = 0.0
    for path in args.files:
        ids = tokenizer.encode(Path(path).read_text(encoding="utf-8"))
        for start in range(0, len(ids) - 1, args.length):
            window = torch.tensor([ids[start:start + args.length + 1]])
            if window.shape[1] < 2:
                continue
            with torch.no_grad():
                logits = model(window[:, :-1]).float()
                loss = torch.nn.functional.cross_entropy(logits[0], window[0, 1:], reduction="sum")
            total, count = total + float(loss), count + window.shape[1] - 1
    print(json.dumps({"model": args.model, "tokens": int(count), "loss": round(total / count, 4),
                      "perplexity": round(math.exp(total / count), 3)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("minhash")
    p.add_argument("--corpus", required=True)
    p.add_argument("--sample", type=int, default=300)
    p.add_argument("--bands", type=int, default=14)
    p.add_argument("--rows", type=int, default=8)
    p = sub.add_parser("langid")
    p.add_argument("--chatterbot", required=True, help="chatterbot_corpus/data folder")
    p = sub.add_parser("extract")
    p.add_argument("--corpus", required=True, help="a folder of Sphinx HTML pages")
    p = sub.add_parser("heldout")
    p.add_argument("--model", required=True)
    p.add_argument("--files", nargs="+", required=True)
    p.add_argument("--length", type=int, default=128)
    p = sub.add_parser("throughput")
    p.add_argument("--corpus", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    {"minhash": minhash, "langid": langid, "throughput": throughput, "extract": extract,
     "heldout": heldout}[args.what](args)


if __name__ == "__main__":
    main()

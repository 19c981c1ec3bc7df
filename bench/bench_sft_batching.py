"""SFT batching: packing (segment_ids) vs padding (one conversation per row), on the chat fixture.

Builds a random model of the tiny recipe's shape (hidden 128, 4 layers) with a checkpoint's
tokenizer (default: a byte-level stand-in; pass ``--tokenizer DIR`` for the tiny BPE), then for
each mode reports the share of padding in the rows and the *useful* (non-padding) tokens per
second of forward + backward + AdamW steps. Prints the pack/pad throughput ratio.

    flock /tmp/team/bench.lock python bench/bench_sft_batching.py [--steps 20] [--tokenizer DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from qwen_cli.data.chat_format import read_chat_jsonl
from qwen_cli.data.chat_template import ChatStats, ChatTemplate, encode_conversations
from qwen_cli.data.shards import BatchLayout
from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.stages.losses import causal_lm_loss
from qwen_cli.stages.sft import ChatBatches
from qwen_cli.tokenizer import Tokenizer, load_tokenizer

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "chatterbot_en.jsonl"


def measure(samples, mode: str, steps: int, seq_len: int, vocab: int) -> tuple[float, float]:
    """(padding fraction, useful tokens per second) over ``steps`` optimizer steps of 32 rows."""
    torch.manual_seed(0)
    model = QwenModel(ModelConfig(vocab_size=vocab, hidden_size=128, num_layers=4, num_heads=4,
                                  intermediate_size=344, max_position_embeddings=seq_len))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = ChatBatches(samples, BatchLayout(0, 1, 16, 2), seq_len, mode, seed=0)
    real = total = 0
    next(batches)  # warm-up
    start = time.perf_counter()
    for _ in range(steps * 2):
        batch = next(batches)
        loss, n, _ = causal_lm_loss(model, batch)
        (loss / n).backward()
        if batches.micro == 0:
            optimizer.step()
            optimizer.zero_grad()
        real += int((batch["segment_ids"] > 0).sum()) if "segment_ids" in batch else int((batch["input_ids"] > 0).sum())
        total += batch["input_ids"].numel()
    elapsed = time.perf_counter() - start
    return 1 - real / total, real / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--tokenizer", default=None, help="tokenizer or checkpoint directory")
    args = parser.parse_args()
    tok = load_tokenizer(args.tokenizer) if args.tokenizer else Tokenizer({bytes([i]): i for i in range(256)}, name="bytes")
    conversations, _ = read_chat_jsonl(FIXTURE)
    stats = ChatStats()
    samples = encode_conversations(ChatTemplate(tok), conversations, args.seq_len, stats)
    print(f"{stats.conversations} conversations, {stats.tokens} tokens, mean {stats.tokens / stats.conversations:.0f}, "
          f"tokenizer {tok.name}, seq_len {args.seq_len}, {torch.get_num_threads()} threads")
    results = {}
    for mode in ("pack", "pad"):
        waste, rate = measure(samples, mode, args.steps, args.seq_len, tok.padded_vocab_size)
        results[mode] = rate
        print(f"{mode}: padding {waste:.1%}, {rate:,.0f} useful tokens/s")
    print(f"pack/pad throughput ratio: {results['pack'] / results['pad']:.2f}x")


if __name__ == "__main__":
    main()

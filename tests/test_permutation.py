"""The O(1)-memory window order (``data.permutation``) and how ranks share it (``data.shards``)."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from qwen_cli.data.encode import DTYPE, FORMAT
from qwen_cli.data.permutation import EpochPermutation, KeyedPermutation
from qwen_cli.data.shards import BatchLayout, ShuffledBatches, TokenWindows
from qwen_cli.errors import UserError

SEQ = 4


@pytest.fixture(scope="module")
def numbered(tmp_path_factory) -> Path:
    """A shard directory (two shards, the format ``qwen tokenize encode`` writes) whose token at stream
    position ``p`` is ``p``: window ``i`` starts with id ``i · SEQ``, so a batch names its windows."""
    root = tmp_path_factory.mktemp("numbered")
    tokens = np.arange(103 * SEQ + 1, dtype=DTYPE)  # 103 windows: a prime count
    files = []
    for i, part in enumerate((tokens[:150], tokens[150:])):
        part.tofile(root / f"shard_{i}.bin")
        files.append({"file": f"shard_{i}.bin", "tokens": len(part)})
    manifest = {"format": FORMAT, "dtype": "uint32", "splits": {"train": {"shards": files}}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def window_ids(batch) -> list[int]:
    return (batch["input_ids"][:, 0] // SEQ).tolist()


SIZES = [1, 2, 3, 4, 5, 7, 8, 13, 16, 17, 31, 64, 97, 100, 127, 128, 129, 1000, 1023, 1024, 1025, 4099, 65_537,
         100_003, 262_144]


@pytest.mark.parametrize("n", SIZES)
def test_every_size_is_a_bijection_in_both_evaluations(n):
    perm = KeyedPermutation(n, [7, n])
    images = perm(np.arange(n))
    assert np.array_equal(np.sort(images), np.arange(n))
    sample = range(0, n, max(1, n // 300))
    assert [perm[i] for i in sample] == images[list(sample)].tolist()  # the scalar path is the same function


def test_order_is_fixed_by_the_seed_and_differs_between_seeds_and_epochs():
    n = 10_000
    order = EpochPermutation(n, [1234])
    first = np.array([order[k] for k in range(2 * n)])
    again = EpochPermutation(n, [1234])
    assert np.array_equal(first, [again[k] for k in range(2 * n)])
    other_seed = KeyedPermutation(n, [1235, 0])(np.arange(n))
    assert np.mean(first[:n] == other_seed) < 0.01
    assert np.mean(first[:n] == first[n:]) < 0.01  # epoch 1 is reshuffled, not a replay
    assert np.array_equal(np.sort(first[n:]), np.arange(n))


def test_memory_and_time_do_not_grow_with_the_number_of_windows():
    n = 10**13  # ≈ 2·10¹⁶ tokens of 2048-token windows
    EpochPermutation(5, [0])[7]  # warm-up: lazy imports are not the permutation's memory
    start = time.perf_counter()
    order = EpochPermutation(n, [1234])
    far = [order[3 * n + k] for k in range(1000)]  # epoch 3, reached without streaming to it
    assert time.perf_counter() - start < 1.0
    assert far == KeyedPermutation(n, [1234, 3])(np.arange(1000)).tolist()
    assert len(set(far)) == 1000 and all(0 <= w < n for w in far)
    tracemalloc.start()
    order = EpochPermutation(n, [99])
    [order[5 * n + k] for k in range(100)]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 100_000, peak  # an array permutation would need 80 TB


def test_the_order_looks_shuffled():
    n = 200_000
    perm = KeyedPermutation(n, [99])(np.arange(n)).astype(np.float64)
    identity = np.arange(n, dtype=np.float64)
    rank_correlation = np.corrcoef(identity, perm)[0, 1]  # the values are ranks: Spearman's rho
    assert abs(rank_correlation) < 0.01  # one standard deviation is 1/sqrt(n) ≈ 0.0022
    successors = np.diff(perm) == 1  # window i followed by window i + 1: ≈ 1 expected in a random order
    assert successors.sum() <= 8
    assert np.count_nonzero(perm == identity) <= 8  # fixed points: ≈ 1 expected
    displacement = np.abs(perm - identity).mean() / n
    assert abs(displacement - 1 / 3) < 0.01  # a uniform shuffle moves an item n/3 on average
    batch = perm[:256]  # one global batch reaches across the whole corpus
    assert np.histogram(batch, bins=4, range=(0, n))[0].min() > 40


@pytest.mark.parametrize("world, micro, accum", [(1, 1, 1), (1, 3, 2), (2, 2, 1), (3, 1, 2), (4, 2, 3)])
def test_ranks_read_every_window_once_per_epoch_and_the_same_stream_as_one_process(numbered, world, micro, accum):
    windows = TokenWindows(numbered, "train", SEQ)
    n = windows.num_windows
    assert n == 103
    global_batch = world * micro * accum
    steps = -(-2 * n // global_batch)  # two epochs and a bit; steps straddle epoch ends
    stream: dict[int, int] = {}
    for rank in range(world):
        layout = BatchLayout(rank, world, micro, accum)
        it = ShuffledBatches(windows, layout, seed=11)
        for step in range(steps):
            for m in range(accum):
                first = layout.micro_start(step * global_batch, m)
                for k, window in zip(range(first, first + micro), window_ids(next(it)), strict=True):
                    assert k not in stream  # no global index is read by two ranks
                    stream[k] = window
    assert sorted(stream) == list(range(steps * global_batch))  # no gap
    for epoch in (0, 1):
        assert sorted(stream[k] for k in range(epoch * n, (epoch + 1) * n)) == list(range(n))
    one = ShuffledBatches(windows, BatchLayout(0, 1, 1, 1), seed=11)
    assert [window_ids(next(one))[0] for _ in range(len(stream))] == [stream[k] for k in range(len(stream))]


def test_resume_from_a_position_equals_streaming_from_the_start(numbered):
    windows = TokenWindows(numbered, "train", SEQ)
    layout = BatchLayout(0, 1, 5, 2)
    streamed = ShuffledBatches(windows, layout, seed=3)
    for _ in range(2 * 23):  # 23 steps of 10 windows: past two epoch ends
        next(streamed)
    state = streamed.state_dict()
    expected = [window_ids(next(streamed)) for _ in range(12)]
    resumed = ShuffledBatches(windows, layout, seed=3)
    resumed.load_state_dict(state)
    assert state["sequences"] == 230 and [window_ids(next(resumed)) for _ in range(12)] == expected
    with pytest.raises(UserError, match="cannot continue the same batches"):  # a position of the old order
        resumed.load_state_dict({"sequences": 230, "seed": 3})


# Golden values: the order is part of every saved data position, so any change to it (a round
# dropped, another mixer, other round keys) must show here and come with a new FORMAT name. The time
# limit is small so that a round that is not invertible (cycle-walking never ends) fails in seconds.
@pytest.mark.timeout(10)
def test_the_order_is_pinned_by_golden_values_and_named_in_saved_positions(numbered):
    from qwen_cli.data.permutation import FORMAT, ROUNDS

    assert (ROUNDS, FORMAT) == (8, "feistel-8")
    assert KeyedPermutation(100, [7, 100])(np.arange(16)).tolist() == \
        [66, 53, 18, 11, 30, 78, 63, 87, 38, 80, 82, 90, 93, 33, 65, 75]
    assert [KeyedPermutation(1_000_003, [1234])[i] for i in range(4)] == [832820, 72150, 983531, 91218]
    stream = EpochPermutation(10, [1234])
    assert [stream[k] for k in range(20)] == [9, 6, 0, 5, 4, 3, 7, 8, 1, 2, 3, 0, 2, 7, 5, 6, 1, 8, 9, 4]
    batches = ShuffledBatches(TokenWindows(numbered, "train", SEQ), BatchLayout(0, 1, 1, 1), seed=11)
    assert batches.state_dict()["order"] == FORMAT


# every test here takes well under a second: a hang (a non-invertible round) fails in seconds, not minutes
pytestmark = pytest.mark.timeout(20)

"""How often the reward model scores a right reply above a wrong one (``ranking_accuracy``), and PPO
logging it for its own samples: the number that shows a policy starting to exploit its reward model."""

from __future__ import annotations

import itertools

import pytest
import torch
from test_ppo_glue import make_run, models  # noqa: F401  (the module-scoped tiny models)

from qwen_cli.evaluation.reward.preference import gold_hits, ranking_accuracy
from qwen_cli.rl import ppo as ppo_module


def by_hand(scores: list[float], right: list[bool]) -> float:
    """The textbook pair count: over every (right, wrong) pair, 1 when the right one scores higher, ½ on a tie."""
    pairs = [(g, b) for (g, rg), (b, rb) in itertools.product(zip(scores, right, strict=True), repeat=2) if rg and not rb]
    return sum(1.0 if g > b else 0.5 if g == b else 0.0 for g, b in pairs) / len(pairs)


def test_ranking_accuracy_is_one_for_a_perfect_ranking_zero_for_a_reversed_one_and_half_for_ties():
    right = [True, False, True, False]
    assert ranking_accuracy(torch.tensor([2.0, -1.0, 1.0, 0.0]), right) == 1.0
    assert ranking_accuracy(torch.tensor([-2.0, 1.0, -1.0, 0.0]), right) == 0.0
    assert ranking_accuracy(torch.tensor([0.5, 0.5, 0.5, 0.5]), right) == 0.5
    assert ranking_accuracy(torch.tensor([3.0, 1.0, 0.0, 2.0]), right) == 0.5  # 3 > 1, 3 > 2; 0 < 1, 0 < 2


def test_ranking_accuracy_matches_the_pair_count_by_hand():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (40,), generator=generator).float()  # small integers: many ties
    right = [bool(x) for x in torch.rand(40, generator=generator) < 0.3]
    assert ranking_accuracy(scores, right) == pytest.approx(by_hand(scores.tolist(), right))


def test_ranking_accuracy_is_none_without_both_a_right_and_a_wrong_reply():
    assert ranking_accuracy(torch.tensor([1.0, 2.0]), [True, True]) is None
    assert ranking_accuracy(torch.tensor([1.0, 2.0]), [False, False]) is None


def test_gold_hits_judges_each_reply_by_its_final_number():
    from rlhf_fixtures import byte_tokenizer

    tokenizer = byte_tokenizer()
    replies = [tokenizer.encode(text) for text in ("94", "The sum is 104", "49")]
    assert gold_hits(tokenizer, replies, ["94", "104", "94"]) == [True, True, False]


def test_ppo_logs_how_its_reward_model_ranks_its_right_samples_over_its_wrong_ones(models, shards, tmp_path,  # noqa: F811
                                                                                  monkeypatch):
    run = make_run(models, shards, tmp_path)
    seen = {}
    sample_rollout = run._rollout

    def keep_scores(step):
        rollout, queries = sample_rollout(step)
        seen["scores"] = rollout.scores.tolist()
        return rollout, queries

    def every_third_right(tokenizer, replies, answers):  # a random tiny policy is never right by itself
        return [i % 3 == 0 for i in range(len(replies))]

    monkeypatch.setattr(run, "_rollout", keep_scores)
    monkeypatch.setattr(ppo_module, "gold_hits", every_third_right)
    metrics = run._step(1)
    right = every_third_right(None, seen["scores"], None)
    assert metrics["gold"] == pytest.approx(sum(right) / len(right))
    assert metrics["reward_gold_ranking"] == pytest.approx(by_hand(seen["scores"], right))

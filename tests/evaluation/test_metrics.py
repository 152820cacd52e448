"""Ranking metrics against values worked out by hand (MMRec's definitions)."""

from __future__ import annotations

import math

import pytest
import torch

from lmmrec.errors import ConfigError
from lmmrec.evaluation.metrics import parse_metric, ranking_metrics


def test_metrics_match_hand_computed_values() -> None:
    # one user, 2 held-out items, hits at ranks 1 and 3 of the top 5
    hits = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0]])
    sums = ranking_metrics(hits, torch.tensor([2]), [1, 3, 5])
    assert sums["recall@1"] == pytest.approx(0.5)
    assert sums["recall@3"] == pytest.approx(1.0)
    assert sums["precision@3"] == pytest.approx(2 / 3)
    assert sums["precision@5"] == pytest.approx(2 / 5)
    assert sums["hit@1"] == 1.0
    # DCG@3 = 1/log2(2) + 1/log2(4) = 1.5; IDCG over min(2, 3) = 2 ranks = 1 + 1/log2(3)
    assert sums["ndcg@3"] == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    # NDCG@1: IDCG over min(2, 1) = 1 rank
    assert sums["ndcg@1"] == pytest.approx(1.0)
    # AP@3 = (P@1 * 1 + P@3 * 1) / min(2, 3) = (1 + 2/3) / 2
    assert sums["map@3"] == pytest.approx((1 + 2 / 3) / 2)
    assert sums["map@1"] == pytest.approx(1.0)


def test_recall_denominator_is_not_capped_at_k() -> None:
    # 10 held-out items, all 5 of the top 5 are hits: recall@5 = 5/10 (MMRec), NDCG@5 = 1
    sums = ranking_metrics(torch.ones(1, 5), torch.tensor([10]), [5])
    assert sums["recall@5"] == pytest.approx(0.5)
    assert sums["ndcg@5"] == pytest.approx(1.0)
    assert sums["map@5"] == pytest.approx(1.0)


def test_metrics_are_per_user() -> None:
    hits = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    sums = {n: v.sum() for n, v in ranking_metrics(hits, torch.tensor([1, 3]), [2]).items()}
    assert sums["recall@2"] == pytest.approx(1.0)  # 1/1 + 0/3
    assert sums["hit@2"] == pytest.approx(1.0)
    assert sums["ndcg@2"] == pytest.approx(1 / math.log2(3))


@pytest.mark.parametrize("bad", ["recall", "recall@0", "foo@10", "ndcg@x"])
def test_bad_metric_names_are_rejected(bad: str) -> None:
    with pytest.raises(ConfigError, match="metric"):
        parse_metric(bad)


def test_metric_names_parse() -> None:
    assert parse_metric("NDCG@20") == ("ndcg", 20)

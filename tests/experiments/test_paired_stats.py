"""Paired tests against scipy and the textbook formula; Holm against a hand-worked case."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from lmmrec.errors import ConfigError
from lmmrec.evaluation.stats import align_users, holm, paired_t_test, wilcoxon_test

# per-user Recall@20 of two systems on 12 users (fixed, hand-made)
A = np.array([0.5, 0.25, 0.0, 1.0, 0.5, 0.75, 0.2, 0.4, 0.0, 0.6, 0.3, 0.9])
B = np.array([0.25, 0.25, 0.0, 0.5, 0.25, 0.5, 0.0, 0.4, 0.1, 0.2, 0.3, 0.5])


def test_paired_t_test_matches_scipy_and_the_formula() -> None:
    result = paired_t_test(A, B)
    expected = stats.ttest_rel(A, B)
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-12)
    d = A - B
    t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    assert result.statistic == pytest.approx(t, rel=1e-12)
    assert result.p_value == pytest.approx(2 * stats.t.sf(abs(t), d.size - 1), rel=1e-12)
    assert result.n == 12 and result.mean_difference == pytest.approx(d.mean())
    assert result.p_value < 0.05


def test_wilcoxon_matches_scipy_and_drops_ties() -> None:
    result = wilcoxon_test(A, B)
    expected = stats.wilcoxon(A, B)  # zero_method="wilcox": zero differences dropped
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-12)
    assert result.n == int(np.count_nonzero(A - B)) == 8


def test_identical_systems_are_not_different() -> None:
    assert paired_t_test(A, A).p_value == 1.0
    assert wilcoxon_test(A, A).p_value == 1.0
    assert math.isnan(paired_t_test(A[:1], B[:1]).p_value)


def test_bad_inputs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="same users"):
        paired_t_test(A, B[:-1])
    with pytest.raises(ConfigError, match="NaN"):
        wilcoxon_test(np.r_[A[:-1], np.nan], B)


def test_holm_hand_worked() -> None:
    # m = 4, sorted: .005*4 = .02, .01*3 = .03, .03*2 = .06, .04*1 = .04 -> running max .06
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # NaN is left out of m (= 2): .2 * 2 = .4, then max(.4, .5 * 1) = .5
    adjusted = holm([0.5, np.nan, 0.2])
    assert adjusted[0] == pytest.approx(0.5) and adjusted[2] == pytest.approx(0.4)
    assert math.isnan(adjusted[1])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # 1.2 capped at 1
    assert holm([]).size == 0


def test_align_users_pairs_by_user_id() -> None:
    users, a, b = align_users(
        np.array([3, 1, 2]),
        np.array([30.0, 10.0, 20.0]),
        np.array([2, 3, 9]),
        np.array([2.0, 3.0, 9.0]),
    )
    assert users.tolist() == [2, 3] and a.tolist() == [20.0, 30.0] and b.tolist() == [2.0, 3.0]

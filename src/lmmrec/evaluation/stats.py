r"""Paired significance across users, and Holm's correction over a family of comparisons.

Two systems evaluated on the same test users give paired samples :math:`a_u, b_u` (a per-user
metric such as Recall@20). The tests ask whether the mean (t-test) or the median-centred
distribution (Wilcoxon) of :math:`d_u = a_u - b_u` differs from 0; both are two-sided and come
from ``scipy.stats``. Users on which the two systems tie (:math:`d_u = 0`, common for top-K
metrics) are dropped by the Wilcoxon test (``zero_method="wilcox"``, Wilcoxon's own rule) and kept
by the t-test.

Holm (1979), step-down: with the :math:`m` p-values sorted, :math:`p_{(1)} \le \dots \le
p_{(m)}`, the adjusted values are :math:`\tilde p_{(i)} = \min(1, \max_{j \le i} (m - j + 1)
p_{(j)})`; rejecting :math:`\tilde p < \alpha` controls the family-wise error rate at
:math:`\alpha` under any dependence between the tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lmmrec.errors import ConfigError


@dataclass(frozen=True)
class PairedTest:
    """One paired test: the statistic, its two-sided p-value, the pairs used, the mean a - b."""

    test: str
    statistic: float
    p_value: float
    n: int
    mean_difference: float


def _pairs(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ConfigError(
            "paired tests need two 1-d arrays over the same users, "
            f"got shapes {a.shape} and {b.shape}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ConfigError("paired tests need finite per-user values (found NaN or inf)")
    return a - b


def paired_t_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> PairedTest:
    """Two-sided paired t-test of ``a - b`` (``scipy.stats.ttest_rel``).

    Identical systems (every difference 0) get p = 1; fewer than 2 pairs give p = NaN.
    """
    from scipy import stats

    d = _pairs(a, b)
    mean = float(d.mean()) if d.size else math.nan
    if d.size < 2:
        return PairedTest("t-test", math.nan, math.nan, int(d.size), mean)
    if not d.any():
        return PairedTest("t-test", 0.0, 1.0, int(d.size), 0.0)
    result = stats.ttest_rel(a, b)
    return PairedTest("t-test", float(result.statistic), float(result.pvalue), int(d.size), mean)


def wilcoxon_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test of ``a - b`` (``scipy.stats.wilcoxon``, ties dropped).

    ``n`` counts the non-zero differences; with none, p = 1.
    """
    from scipy import stats

    d = _pairs(a, b)
    mean = float(d.mean()) if d.size else math.nan
    nonzero = int(np.count_nonzero(d))
    if nonzero == 0:
        return PairedTest("wilcoxon", 0.0, 1.0, 0, mean)
    result = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return PairedTest("wilcoxon", float(result.statistic), float(result.pvalue), nonzero, mean)


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values, in the input order (NaN stays NaN and is not counted in m)."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return adjusted
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]  # (m - j + 1) p_(j), j = 1..m
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted


def align_users(
    users_a: np.ndarray, values_a: np.ndarray, users_b: np.ndarray, values_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The users both arrays cover, with their values in the same order."""
    common, ia, ib = np.intersect1d(users_a, users_b, assume_unique=True, return_indices=True)
    return common, np.asarray(values_a)[ia], np.asarray(values_b)[ib]

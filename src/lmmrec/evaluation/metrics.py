r"""Top-K ranking metrics with MMRec's definitions, vectorised over a block of users.

For a user with held-out set :math:`T` (:math:`|T| \ge 1`) and top-K hits
:math:`h_1..h_K \in \{0,1\}`:

* Recall@K :math:`= \sum_{r \le K} h_r / |T|` (denominator not capped at K, as MMRec ``recall_``)
* Precision@K :math:`= \sum_{r \le K} h_r / K`
* Hit@K :math:`= [\sum_{r \le K} h_r > 0]`
* NDCG@K :math:`= \frac{\sum_{r \le K} h_r / \log_2(r+1)}{\sum_{r \le \min(|T|, K)} 1/\log_2(r+1)}`
  (binary gains, IDCG over :math:`\min(|T|, K)`, as MMRec ``ndcg_``)
* MAP@K :math:`= \frac{1}{\min(|T|, K)} \sum_{r \le K} h_r \cdot \mathrm{Prec}@r` (MMRec ``map_``)

Each is averaged over the users with at least one held-out item.
"""

from __future__ import annotations

import torch

from lmmrec.errors import ConfigError

METRICS = ("recall", "ndcg", "precision", "map", "hit")


def metric_name(metric: str, k: int) -> str:
    return f"{metric}@{k}"


def parse_metric(name: str) -> tuple[str, int]:
    """``"recall@20"`` -> ``("recall", 20)``; raises :class:`ConfigError` on anything else."""
    metric, _, k = name.lower().partition("@")
    if metric not in METRICS or not k.isdigit() or int(k) <= 0:
        raise ConfigError(
            f"bad metric {name!r}; write <metric>@<K> with metric one of {', '.join(METRICS)}"
        )
    return metric, int(k)


def ranking_metric_sums(
    hits: torch.Tensor, n_relevant: torch.Tensor, ks: list[int]
) -> dict[str, torch.Tensor]:
    """Per-metric sums over a block of users (divide by the user count for the mean).

    Args:
        hits: ``[B, K_max]`` 0/1 float, ``hits[b, r]`` = the item at rank ``r + 1`` is held out.
        n_relevant: ``[B]`` number of held-out items per user (all >= 1).
        ks: cut-offs, each <= ``K_max``.

    Returns:
        ``{"recall@K": scalar tensor, ...}`` for every metric in :data:`METRICS` and K in ``ks``.
    """
    k_max = hits.shape[1]
    ranks = torch.arange(1, k_max + 1, device=hits.device, dtype=hits.dtype)  # [K_max]
    discounts = 1.0 / torch.log2(ranks + 1.0)  # [K_max]
    cum_hits = hits.cumsum(1)  # [B, K_max]
    dcg = (hits * discounts).cumsum(1)  # [B, K_max]
    ideal = discounts.cumsum(0)  # [K_max], IDCG with r relevant items = ideal[r - 1]
    avg_precision = (hits * cum_hits / ranks).cumsum(1)  # [B, K_max]
    n_relevant = n_relevant.to(hits.dtype)
    sums: dict[str, torch.Tensor] = {}
    for k in ks:
        found = cum_hits[:, k - 1]  # [B]
        capped = torch.clamp(n_relevant, max=k)  # [B], min(|T|, K)
        per_user = {
            "recall": found / n_relevant,
            "ndcg": dcg[:, k - 1] / ideal[capped.long() - 1],
            "precision": found / k,
            "map": avg_precision[:, k - 1] / capped,
            "hit": (found > 0).to(hits.dtype),
        }
        for metric in METRICS:
            sums[metric_name(metric, k)] = per_user[metric].sum()
    return sums

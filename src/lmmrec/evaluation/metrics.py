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


def ranking_metrics(
    hits: torch.Tensor, n_relevant: torch.Tensor, ks: list[int]
) -> dict[str, torch.Tensor]:
    """Every metric at every cut-off, per user.

    Args:
        hits: ``[B, L]`` 0/1 float, ``hits[b, r]`` = the item at rank ``r + 1`` is held out. ``L``
            may be smaller than a cut-off when the catalogue has fewer items: the list then holds
            every item, and ``metric@K`` is computed from it by the definitions above (recall and
            NDCG equal their values at ``L``; precision still divides by ``K``).
        n_relevant: ``[B]`` number of held-out items per user (all >= 1, at most ``L``).
        ks: cut-offs.

    Returns:
        ``{"recall@K": [B] tensor, ...}`` for every metric in :data:`METRICS` and K in ``ks``.
    """
    length = hits.shape[1]
    ranks = torch.arange(1, length + 1, device=hits.device, dtype=hits.dtype)  # [L]
    discounts = 1.0 / torch.log2(ranks + 1.0)  # [L]
    cum_hits = hits.cumsum(1)  # [B, L]
    dcg = (hits * discounts).cumsum(1)  # [B, L]
    ideal = discounts.cumsum(0)  # [L], IDCG with r relevant items = ideal[r - 1]
    avg_precision = (hits * cum_hits / ranks).cumsum(1)  # [B, L]
    n_relevant = n_relevant.to(hits.dtype)
    values: dict[str, torch.Tensor] = {}
    for k in ks:
        last = min(k, length) - 1  # the list ends at rank L when K > L
        found = cum_hits[:, last]  # [B]
        capped = torch.clamp(n_relevant, max=k)  # [B], min(|T|, K)
        per_user = {
            "recall": found / n_relevant,
            "ndcg": dcg[:, last] / ideal[capped.long() - 1],
            "precision": found / k,
            "map": avg_precision[:, last] / capped,
            "hit": (found > 0).to(hits.dtype),
        }
        for metric in METRICS:
            values[metric_name(metric, k)] = per_user[metric]
    return values

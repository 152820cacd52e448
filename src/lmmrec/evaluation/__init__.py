"""Full-ranking evaluation: the one top-K ranker, metrics, the evaluator, cold-start pools."""

from lmmrec.evaluation.evaluator import Evaluator, PerUserMetrics
from lmmrec.evaluation.metrics import METRICS, metric_name, parse_metric
from lmmrec.evaluation.pools import PoolResult, evaluate_pools
from lmmrec.evaluation.ranking import Ranker, TopK, top_k

__all__ = [
    "METRICS",
    "Evaluator",
    "PerUserMetrics",
    "PoolResult",
    "Ranker",
    "TopK",
    "evaluate_pools",
    "metric_name",
    "parse_metric",
    "top_k",
]

"""Full-ranking evaluation: the one top-K ranker, metrics and the evaluator."""

from lmmrec.evaluation.evaluator import Evaluator, PerUserMetrics
from lmmrec.evaluation.metrics import METRICS, metric_name, parse_metric
from lmmrec.evaluation.ranking import Ranker, TopK, top_k

__all__ = [
    "METRICS",
    "Evaluator",
    "PerUserMetrics",
    "Ranker",
    "TopK",
    "metric_name",
    "parse_metric",
    "top_k",
]

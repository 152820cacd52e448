"""Full-ranking evaluation: metrics and the evaluator that ranks all items for every user."""

from lmmrec.evaluation.evaluator import Evaluator
from lmmrec.evaluation.metrics import METRICS, metric_name, parse_metric

__all__ = ["METRICS", "Evaluator", "metric_name", "parse_metric"]

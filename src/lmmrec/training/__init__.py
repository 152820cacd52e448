"""Training: the runtime (device, precision, processes), the trainer loop and training runs."""

from lmmrec.training.config import RunConfig, TrainConfig, load_run_config
from lmmrec.training.run import RunResult, evaluate_run, evaluate_run_pools, train
from lmmrec.training.trainer import FitResult, Trainer

__all__ = [
    "FitResult",
    "RunConfig",
    "RunResult",
    "TrainConfig",
    "Trainer",
    "evaluate_run",
    "evaluate_run_pools",
    "load_run_config",
    "train",
]

"""Experiments: YAML grids expanded into runs (spec), run resumably (runner), reported (report)."""

from lmmrec.experiments.runner import ExperimentRun, experiment_status, run_experiment
from lmmrec.experiments.spec import Cell, Experiment, ExperimentSpec, load_experiment

__all__ = [
    "Cell",
    "Experiment",
    "ExperimentRun",
    "ExperimentSpec",
    "experiment_status",
    "load_experiment",
    "run_experiment",
]

"""``log: mlflow``: every run's parameters, per-epoch curves and test metrics in MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from experiment_helpers import tiny_spec

from lmmrec.errors import ConfigError
from lmmrec.experiments import load_experiment, run_experiment
from lmmrec.experiments.tracking import MLFLOW_RUN_FILE, flatten, mlflow_key


def test_mlflow_keys_and_flattened_parameters_are_what_mlflow_accepts() -> None:
    assert mlflow_key("recall@20") == "recall_at_20"
    params = dict(flatten({"train": {"lr": 0.01, "ks": [10, 20]}, "features": None}))
    assert params == {"train.lr": "0.01", "train.ks": "[10, 20]", "features": "None"}


def test_mlflow_logs_params_curves_and_test_metrics(tiny_source: str, tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    spec = tiny_spec(tiny_source, tmp_path / "out", seeds=[1], log="mlflow", mlflow_uri=uri)
    spec["models"] = {"bpr": {"params": {"embedding_size": 8}, "grid": {"lr": [0.01, 0.05]}}}
    result = run_experiment(spec, progress=False)
    assert result.executed == 2

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    table = result.results.set_index("run_id")
    for run in runs:
        row = table.loc[run.info.run_name]  # the MLflow run is named after the lmmrec run
        assert run.info.status == "FINISHED"
        params, metrics = run.data.params, run.data.metrics
        assert params["model"] == "bpr" and params["model_params.embedding_size"] == "8"
        assert float(params["train.lr"]) == json.loads(row["point"])["lr"]
        assert params["model_params.reg_weight"] == "0.1"  # the resolved default, not just the file
        assert run.data.tags["point"] == row["point"]
        assert metrics["test_recall_at_20"] == pytest.approx(row["test.recall@20"])
        assert metrics["best_epoch"] == row["best_epoch"]
        losses = client.get_metric_history(run.info.run_id, "train_loss")
        assert [m.step for m in losses] == [1, 2]
        curve = client.get_metric_history(run.info.run_id, "valid_recall_at_20")
        run_dir = Path(row["run_dir"])
        history = json.loads((run_dir / "metrics.json").read_text())
        assert max(m.value for m in curve) == pytest.approx(history["valid"]["recall@20"])
        assert (run_dir / MLFLOW_RUN_FILE).read_text() == run.info.run_id

    # a second run of the file trains nothing and logs nothing new
    assert run_experiment(spec, progress=False).executed == 0
    assert len(client.search_runs([experiment.experiment_id])) == 2


def test_mlflow_logging_is_validated_with_the_file(tiny_source: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="log"):
        load_experiment(tiny_spec(tiny_source, tmp_path, log="wandb"))

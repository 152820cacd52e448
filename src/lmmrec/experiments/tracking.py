"""Optional logging of every experiment run to TensorBoard or MLflow (extras, off by default).

Both are epoch observers for the trainer (``callback(trainer, record)``): ``train/loss`` and
``valid/<metric>`` per epoch. MLflow also receives the run's resolved configuration as
parameters at the start and its test metrics at the selected epoch at the end. An experiment
file turns them on with ``log: tensorboard`` (event files in ``<run_dir>/tensorboard``) or
``log: mlflow`` (``mlflow_uri``: any MLflow tracking URI; default a SQLite store
``<output_dir>/mlflow.db``, MLflow's local store since its file store was frozen).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lmmrec.errors import ConfigError
from lmmrec.io import atomic_path

MLFLOW_DB = "mlflow.db"
MLFLOW_RUN_FILE = "mlflow_run_id.txt"  # a resumed run continues its MLflow run
_MLFLOW_KEY = re.compile(r"[^\w\-. /]")  # MLflow keys: alphanumerics, _ - . space /


def tensorboard_logger(run_dir: Path) -> tuple[Callable[..., None], Callable[[], None]]:
    """An epoch callback writing ``train/loss`` and ``valid/<metric>`` per epoch to TensorBoard
    event files in ``<run_dir>/tensorboard``, and the function that closes them."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "log: tensorboard needs the tensorboard package: pip install 'lmmrec[tensorboard]'"
        ) from None
    writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def log(*args: Any) -> None:
        record = args[-1]  # callback(trainer, record)
        epoch = int(record["epoch"])
        writer.add_scalar("train/loss", float(record["loss"]), epoch)
        for name, value in (record.get("valid") or {}).items():
            writer.add_scalar(f"valid/{name}", float(value), epoch)
        writer.flush()

    return log, writer.close


def default_mlflow_uri(output_dir: str | Path) -> str:
    """``sqlite:///<absolute output_dir>/mlflow.db``: the experiment's own local store."""
    return f"sqlite:///{(Path(output_dir) / MLFLOW_DB).resolve()}"


def mlflow_key(name: str) -> str:
    """A metric or parameter name MLflow accepts: ``recall@20`` -> ``recall_at_20``."""
    return _MLFLOW_KEY.sub("_", name.replace("@", "_at_"))


def flatten(config: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """``("train.lr", "0.001")`` pairs of a nested configuration (lists and ``None`` as text)."""
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from flatten(value, f"{name}.")
        else:
            yield mlflow_key(name), str(value)


class MlflowRun:
    """One experiment run mirrored as an MLflow run (resumed runs continue the same one).

    Args:
        uri: the tracking URI.
        experiment: the MLflow experiment's name (the lmmrec experiment's name).
        run_dir: the lmmrec run directory; its name is the MLflow run's name.
        params: the resolved run configuration, logged flattened (``model_params.reg_weight``).
        tags: extra tags (dataset label, model, encoder, paradigm, grid point).
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_dir: Path,
        params: dict[str, Any],
        tags: dict[str, str] | None = None,
    ) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError(
                "log: mlflow needs the mlflow-skinny package: pip install 'lmmrec[mlflow]'"
            ) from None
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        id_file = Path(run_dir) / MLFLOW_RUN_FILE
        if id_file.is_file():
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            run = self.client.create_run(experiment_id, run_name=Path(run_dir).name, tags=tags)
            self.run_id = run.info.run_id
            with atomic_path(id_file) as tmp:
                tmp.write_text(self.run_id)
            from mlflow.entities import Param

            batch = [Param(k, v[:6000]) for k, v in flatten(params)]
            for start in range(0, len(batch), 100):  # MLflow takes at most 100 params a call
                self.client.log_batch(self.run_id, params=batch[start : start + 100])

    def epoch(self, *args: Any) -> None:
        """The epoch callback: ``train_loss`` and ``valid_<metric>`` at step = epoch."""
        from mlflow.entities import Metric

        record = args[-1]
        epoch, now = int(record["epoch"]), _millis()
        metrics = [Metric("train_loss", float(record["loss"]), now, epoch)]
        for name, value in (record.get("valid") or {}).items():
            metrics.append(Metric(f"valid_{mlflow_key(name)}", float(value), now, epoch))
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, summary: dict[str, Any] | None, status: str = "FINISHED") -> None:
        """Log ``test_<metric>``, ``best_epoch``, ``epochs_run`` and ``seconds`` from the run's
        ``metrics.json`` content (``None``: nothing), then close the run with ``status``."""
        from mlflow.entities import Metric

        if summary:
            now, step = _millis(), int(summary.get("best_epoch") or 0)
            metrics = [
                Metric(f"test_{mlflow_key(k)}", float(v), now, step)
                for k, v in (summary.get("test") or {}).items()
            ]
            metrics += [
                Metric(k, float(summary[k]), now, step)
                for k in ("best_epoch", "epochs_run", "seconds")
                if summary.get(k) is not None
            ]
            self.client.log_batch(self.run_id, metrics=metrics)
        self.client.set_terminated(self.run_id, status=status)


def _millis() -> int:
    import time

    return int(time.time() * 1000)

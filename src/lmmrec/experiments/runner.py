"""Running an experiment: every cell of the grid, resumable, locally or fanned out on Ray.

Each cell's run directory is ``<output_dir>/runs/<model>-<hash>``, where the hash covers the
cell's resolved run configuration (model defaults filled in) and the content hashes of its
inputs (the dataset's split interactions, the feature set's vectors), but not where the dataset
lives: two grid points never share a directory, a finished run is recognised whatever order the
grid is in, and a dataset folder moved or given by another path (``--var``) keeps its runs.
Runs named before the path left the hash (it named the dataset as given) are found under their
old names. Two cells that would be the same run (two encoders naming one feature set, two
datasets holding the same data) are refused before anything runs. Next to what
:func:`lmmrec.training.train` writes there, the runner keeps ``status.json`` (``running``,
``done``, ``failed`` or ``interrupted``, with a failed run's one-line error; the traceback goes to
``error.txt``). ``<output_dir>/results.parquet`` holds one row per cell with its resolved
configuration, state, best epoch, validation and test metrics.

Resuming: finished runs are never repeated; interrupted ones continue from ``checkpoint.pt``
(``train(resume=True)``); failed ones are tried again. A failed cell never stops the others.
Runs that share a machine share its cores: each run gets ``threads`` torch threads, and at most
``cores // threads`` run at once. ``only`` narrows a call to some cells (``model=mmgcn``,
``seed=2022``, a grid key, a run name: :func:`select_runs`); the results table keeps them all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lmmrec.errors import ConfigError, LmmrecError
from lmmrec.experiments.spec import Cell, Experiment, load_experiment
from lmmrec.experiments.tracking import MlflowRun, default_mlflow_uri, tensorboard_logger
from lmmrec.io import atomic_path, read_json, write_json

STATUS = "status.json"
ERROR = "error.txt"
RESULTS = "results.parquet"
RUNS = "runs"
RESULTS_EVERY_SECONDS = 10.0
STATES = ("done", "running", "interrupted", "failed", "pending")


@dataclass
class PlannedRun:
    """A cell with its run directory, or the reason its inputs are not available yet."""

    cell: Cell
    run_id: str | None = None
    run_dir: Path | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    problem: str | None = None  # inputs that cannot be read: the cell fails with this line
    waiting: str | None = None  # inputs the runner makes first (features to extract)


@dataclass
class ExperimentRun:
    """What :func:`run_experiment` did: the plan, the results table and the counts."""

    experiment: Experiment
    runs: list[PlannedRun]
    results: pd.DataFrame
    executed: int = 0
    seconds: float = 0.0
    selected: list[bool] = field(default_factory=list)  # per run (and results row): in `only`

    def counts(self) -> dict[str, int]:
        return state_counts(self.results)


# ----------------------------------------------------------------------------- inputs
class Inputs:
    """Datasets of an experiment, each loaded once, and the content hashes of what runs read."""

    def __init__(self) -> None:
        self._datasets: dict[str, Any] = {}
        self._errors: dict[str, str] = {}
        self._feature_hashes: dict[tuple[str, str], str] = {}

    def dataset(self, source: str) -> Any:
        """The loaded dataset; raises the loading error (cached) when it cannot be read."""
        from lmmrec.data.loading import load_dataset

        if source in self._errors:
            raise LmmrecError(self._errors[source])
        if source not in self._datasets:
            try:
                self._datasets[source] = load_dataset(source)
            except Exception as error:
                self._errors[source] = one_line(error)
                raise
        return self._datasets[source]

    def feature_hash(self, source: str, name: str) -> str | None:
        key = (source, name)
        if key not in self._feature_hashes:
            dataset = self.dataset(source)
            if name not in dataset.features:
                return None
            self._feature_hashes[key] = dataset.feature_set(name).content_hash()
        return self._feature_hashes[key]

    def forget_features(self, source: str, name: str) -> None:
        self._feature_hashes.pop((source, name), None)


def resolved_config(cell: Cell | dict[str, Any]) -> dict[str, Any]:
    """The cell's run configuration as ``train`` writes it: defaults of model and training filled
    in (without ``output_dir`` and ``name``, which do not change what is computed)."""
    from lmmrec.models import registry
    from lmmrec.training.config import RunConfig

    config = RunConfig.model_validate(cell.config if isinstance(cell, Cell) else cell)
    params = registry.make_config(config.model, config.model_params).model_dump()
    data = config.model_copy(update={"model_params": params}).model_dump(mode="json")
    data.pop("output_dir", None)
    data.pop("name", None)
    return data


def run_id(cell: Cell, inputs: dict[str, str], *, with_dataset_path: bool = False) -> str:
    """``<model>-<12 hex>``: the hash of the resolved configuration and the inputs' hashes.

    The dataset's path is left out (``inputs["dataset"]`` is its content hash);
    ``with_dataset_path=True`` gives the name runs had before, which kept it.
    """
    return _hashed_name(cell.model, resolved_config(cell), inputs, with_dataset_path)


def _hashed_name(
    model: str, config: dict[str, Any], inputs: dict[str, str], with_dataset_path: bool
) -> str:
    """:func:`run_id` from the cell's resolved configuration (computed once for both names)."""
    from lmmrec.training.config import run_identity

    config = run_identity(config)
    if not with_dataset_path:
        config = {key: value for key, value in config.items() if key != "dataset"}
    payload = json.dumps({"config": config, "inputs": inputs}, sort_keys=True)
    return f"{model}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def plan(experiment: Experiment, inputs: Inputs | None = None) -> list[PlannedRun]:
    """Name every cell's run by its configuration and inputs (loads each dataset once)."""
    inputs = inputs or Inputs()
    runs_dir = experiment.output_dir / RUNS
    planned = []
    for cell in experiment.cells:
        run = PlannedRun(cell)
        source = cell.config["dataset"]
        try:
            dataset = inputs.dataset(source)
        except Exception as error:
            run.problem = f"dataset {source!r}: {one_line(error)}"
            planned.append(run)
            continue
        run.inputs["dataset"] = dataset.content_hash()
        features = cell.config.get("features")
        if features:
            digest = inputs.feature_hash(source, features)
            if digest is None:
                encoder = experiment.spec.encoders.get(cell.encoder or "")
                if encoder is not None and encoder.extract and encoder.features == features:
                    run.waiting = f"features {features!r} are extracted first ({encoder.extract})"
                else:
                    known = ", ".join(sorted(dataset.features)) or "none"
                    run.problem = (
                        f"dataset {source!r} has no feature set {features!r} (it has: {known}); "
                        "extract it with `lmmrec encode` or give the encoder an extract: spec"
                    )
                planned.append(run)
                continue
            run.inputs["features"] = digest
        config = resolved_config(cell)
        run.run_id = _hashed_name(cell.model, config, run.inputs, with_dataset_path=False)
        legacy = _hashed_name(cell.model, config, run.inputs, with_dataset_path=True)
        if not (runs_dir / run.run_id).exists() and (runs_dir / legacy).exists():
            run.run_id = legacy
        run.run_dir = runs_dir / run.run_id
        planned.append(run)
    _refuse_duplicates(planned)
    return planned


CELL_KEYS = ("dataset", "model", "encoder", "paradigm", "seed", "run")


def select_runs(
    runs: list[PlannedRun], only: Iterable[str], where: str = "experiment"
) -> list[bool]:
    """Which runs the filters pick, one flag per run.

    A filter is ``KEY=VALUE``, with ``KEY`` one of :data:`CELL_KEYS` or a grid key of the file
    (``lr=0.01`` matches 1e-2 too), or a run's name alone (``mmgcn-84f7fafb3d48``). Filters on
    one key are alternatives, filters on different keys must all hold: ``model=bm3 model=bpr
    seed=2022`` picks both models' seed-2022 runs. No filter picks every run.

    Raises:
        ConfigError: a filter of the wrong shape, a key no run has, or filters that pick nothing.
    """
    wanted: dict[str, list[str]] = {}
    for text in only:
        key, sep, value = text.partition("=")
        key, value = (key.strip(), value.strip()) if sep else ("run", text.strip())
        if not key or not value:
            raise ConfigError(f"--only {text!r} must look like KEY=VALUE or a run name")
        wanted.setdefault(key, []).append(value)
    grid_keys = {key for run in runs for key in run.cell.point}
    for key in wanted:
        if key not in CELL_KEYS and key not in grid_keys:
            known = ", ".join([*CELL_KEYS, *sorted(grid_keys)])
            raise ConfigError(f"--only: the runs of {where} have no {key!r}; filter by {known}")
    flags = [
        all(
            any(_matches(_cell_value(run, key), v) for v in values)
            for key, values in wanted.items()
        )
        for run in runs
    ]
    if runs and not any(flags):
        picked = " ".join(f"{key}={v}" for key, values in wanted.items() for v in values)
        raise ConfigError(
            f"--only {picked} matches none of the {len(runs)} runs of {where}; "
            "see them with `lmmrec experiment run FILE --dry-run`"
        )
    return flags


def _cell_value(run: PlannedRun, key: str) -> Any:
    if key == "run":
        return run.run_id
    if key in CELL_KEYS:
        return getattr(run.cell, key)
    return run.cell.point.get(key)


def _matches(actual: Any, wanted: str) -> bool:
    """``actual`` (a cell's value) equals the filter's text, numbers compared as numbers."""
    if actual is None:
        return False
    if str(actual) == wanted:
        return True
    if isinstance(actual, bool):
        return wanted.lower() == str(actual).lower()
    if isinstance(actual, int | float):
        with contextlib.suppress(ValueError):
            return float(actual) == float(wanted)
    return False


def _refuse_duplicates(runs: list[PlannedRun]) -> None:
    """Two cells with one run name would train into one directory: refuse them, named."""
    seen: dict[str, Cell] = {}
    for run in runs:
        if run.run_id is None:
            continue
        first = seen.setdefault(run.run_id, run.cell)
        if first is not run.cell:
            raise ConfigError(
                f"cells [{first.label()}] and [{run.cell.label()}] are the same run (the same "
                "configuration on the same data and features); drop one of them from the file"
            )


def prepare_features(
    experiment: Experiment, runs: list[PlannedRun], inputs: Inputs, say: Callable[[str], None]
) -> list[PlannedRun]:
    """Extract the feature sets that the waiting ones of ``runs`` need (once each), then plan
    every cell again."""
    from lmmrec.encoders import build, extract_features

    wanted = {
        (run.cell.config["dataset"], run.cell.encoder) for run in runs if run.waiting is not None
    }
    for source, label in sorted(wanted, key=str):
        entry = experiment.spec.encoders[label or ""]
        assert entry.extract is not None and entry.features is not None  # as plan() checked
        say(f"extracting feature set {entry.features!r} of {source} with {entry.extract}")
        try:
            extract_features(inputs.dataset(source), build(entry.extract), name=entry.features)
        except Exception as error:
            say(f"[red]feature extraction failed[/red]: {one_line(error)}")
        inputs.forget_features(source, entry.features)
    new_plan = plan(experiment, inputs)
    for run in new_plan:
        tried = (run.cell.config["dataset"], run.cell.encoder) in wanted
        if run.waiting is not None and tried:  # extraction failed: the cell fails with that reason
            run.problem, run.waiting = f"{run.waiting}, but extraction failed", None
    return new_plan


# ----------------------------------------------------------------------------- state
def one_line(error: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    line = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_state(run: PlannedRun) -> dict[str, Any]:
    """``{"state": one of STATES, "error": ...}`` from the run directory's ``status.json``."""
    if run.problem is not None:
        return {"state": "failed", "error": run.problem}
    if run.run_dir is None:
        return {"state": "pending", "note": run.waiting}
    path = run.run_dir / STATUS
    if not path.is_file():
        return {"state": "interrupted" if (run.run_dir / "checkpoint.pt").is_file() else "pending"}
    try:
        status = read_json(path)
    except (OSError, ValueError):
        return {"state": "interrupted"}
    if status.get("state") == "running":
        here = status.get("host") == socket.gethostname()
        if here and not _alive(int(status.get("pid", -1))):
            return {**status, "state": "interrupted"}
    if status.get("state") == "done" and not (run.run_dir / "metrics.json").is_file():
        return {**status, "state": "interrupted"}
    return status


def _write_status(run_dir: Path, state: str, **extra: Any) -> None:
    write_json(
        run_dir / STATUS,
        {"state": state, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
        | extra,
    )


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads (``None``: unchanged), then restore."""
    import torch

    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def execute_run(
    config: dict[str, Any],
    run_dir: str | Path,
    *,
    threads: int | None = None,
    dataset: Any = None,
    callbacks: list[Callable[..., None]] | None = None,
    log: str | None = None,
    mlflow: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one cell in ``run_dir`` (resuming it); never raises for a failed run.

    Returns the status written to ``status.json``: ``done`` with the wall seconds, or ``failed``
    with the one-line error (the traceback is in ``error.txt``). Ctrl-C marks the run
    ``interrupted`` and propagates. ``log="tensorboard"`` also writes the run's per-epoch loss and
    validation metrics under ``<run_dir>/tensorboard``; ``log="mlflow"`` sends them, the resolved
    configuration and the test metrics to MLflow (``mlflow``: ``uri``, ``experiment`` and
    ``tags``; :class:`~lmmrec.experiments.tracking.MlflowRun`).
    """
    from lmmrec.training import train
    from lmmrec.training.config import RunConfig

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    _write_status(run_dir, "running", started=time.time())
    closers: list[Callable[[], None]] = []
    tracked: MlflowRun | None = None
    try:
        run_config = RunConfig.model_validate(
            {**config, "output_dir": str(run_dir.parent), "name": run_dir.name}
        )
        callbacks = list(callbacks or [])
        if log == "tensorboard":
            logger, close = tensorboard_logger(run_dir)
            callbacks.append(logger)
            closers.append(close)
        if log == "mlflow":
            settings = mlflow or {}
            tracked = MlflowRun(
                settings.get("uri") or default_mlflow_uri(run_dir.parent.parent),
                settings.get("experiment") or "lmmrec",
                run_dir,
                resolved_config(config),
                settings.get("tags"),
            )
            callbacks.append(tracked.epoch)
        with torch_threads(threads):
            train(run_config, dataset=dataset, resume=True, callbacks=callbacks)
        if tracked is not None:
            tracked.finish(read_json(run_dir / "metrics.json"))
    except KeyboardInterrupt:
        _write_status(run_dir, "interrupted")
        if tracked is not None:
            with contextlib.suppress(Exception):
                tracked.finish(None, status="KILLED")
        raise
    except Exception as error:
        if tracked is not None:
            with contextlib.suppress(Exception):  # the run's own error is the one to report
                tracked.finish(None, status="FAILED")
        with atomic_path(run_dir / ERROR) as tmp:
            tmp.write_text("".join(traceback.format_exception(error)))
        status = {"error": one_line(error), "wall_seconds": time.perf_counter() - started}
        _write_status(run_dir, "failed", **status)
        return {"state": "failed", **status}
    finally:
        for close in closers:
            close()
    (run_dir / ERROR).unlink(missing_ok=True)
    status = {"wall_seconds": time.perf_counter() - started}
    _write_status(run_dir, "done", **status)
    return {"state": "done", **status}


# ----------------------------------------------------------------------------- results
def run_record(run: PlannedRun, status: dict[str, Any] | None = None) -> dict[str, Any]:
    """One row of the results table (metrics as ``valid.<m>`` / ``test.<m>`` columns)."""
    cell = run.cell
    status = status or run_state(run)
    record: dict[str, Any] = {
        "run_id": run.run_id,
        "state": status.get("state"),
        "dataset": cell.dataset,
        "model": cell.model,
        "encoder": cell.encoder,
        "paradigm": cell.paradigm,
        "point": cell.point_key,
        "seed": cell.seed,
        "error": status.get("error") or status.get("note"),
        "run_dir": str(run.run_dir) if run.run_dir else None,
        "config": json.dumps(cell.config, sort_keys=True),
        "wall_seconds": status.get("wall_seconds"),
    }
    if record["state"] == "done" and run.run_dir is not None:
        with contextlib.suppress(OSError, ValueError):
            metrics = read_json(run.run_dir / "metrics.json")
            record.update(
                best_epoch=metrics.get("best_epoch"),
                epochs_run=metrics.get("epochs_run"),
                stopped_by=metrics.get("stopped_by"),
                seconds=metrics.get("seconds"),
            )
            for split in ("valid", "test"):
                for name, value in (metrics.get(split) or {}).items():
                    record[f"{split}.{name}"] = value
    return record


def results_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(records))
    for column in ("best_epoch", "epochs_run", "seconds", "wall_seconds"):
        if column not in frame:
            frame[column] = float("nan")
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def write_results(output_dir: Path, frame: pd.DataFrame) -> Path:
    path = Path(output_dir) / RESULTS
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path


def read_results(output_dir: Path) -> pd.DataFrame:
    path = Path(output_dir) / RESULTS
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: run the experiment first")
    return pd.read_parquet(path)


def state_counts(frame: pd.DataFrame) -> dict[str, int]:
    counts = frame["state"].value_counts().to_dict() if len(frame) else {}
    return {state: int(counts.get(state, 0)) for state in STATES}


def experiment_status(
    source: str | Path | Experiment,
    variables: dict[str, str] | None = None,
    only: Iterable[str] = (),
) -> tuple[Experiment, pd.DataFrame]:
    """Each cell's state (done / running / interrupted / failed / pending) without running any;
    with ``only``, the cells those filters pick (:func:`select_runs`)."""
    experiment = source if isinstance(source, Experiment) else load_experiment(source, variables)
    runs = plan(experiment)
    picked = select_runs(runs, only, experiment.where)
    return experiment, results_frame(
        run_record(r) for r, keep in zip(runs, picked, strict=True) if keep
    )


# ----------------------------------------------------------------------------- running
class GridProgress:
    """Progress over the grid: runs done / running / failed / left, elapsed time and an estimate.

    On a terminal a rich progress bar (the current run's epoch in its description); elsewhere
    (a log file, a pipe) one line per run started by this process and one per finished run. The
    estimate is the mean wall time per finished run, which already reflects how many run at once,
    times the runs left, counting those in flight as half done.
    """

    def __init__(self, total: int, done: int, console: Any, enabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console
        self.total, self.done, self.failed, self.running = total, done, 0, 0
        self.started = time.perf_counter()
        self.finished_here = 0
        self.live = enabled and console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not self.live,
        )
        self.task = self.progress.add_task(self._text(""), total=total, completed=done)

    def _text(self, current: str) -> str:
        left = self.total - self.done - self.failed - self.running
        text = f"done {self.done} · running {self.running} · failed {self.failed} · left {left}"
        return f"{text}  {current}" if current else text

    def __enter__(self) -> GridProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def set_running(self, n: int, current: str = "") -> None:
        self.running = n
        self.progress.update(self.task, description=self._text(current))

    def started_run(self, label: str) -> None:
        self.running += 1
        self.progress.update(self.task, description=self._text(label))
        if not self.live:
            self.console.print(
                f"started {label} ({self._text('')})", highlight=False, soft_wrap=True
            )

    def epoch(self, label: str, record: dict[str, Any], metric: str) -> None:
        valid = record.get("valid", {}).get(metric)
        extra = f" valid {metric} {valid:.4f}" if valid is not None else ""
        self.progress.update(
            self.task, description=self._text(f"{label}: epoch {record['epoch']}{extra}")
        )

    def finished_run(self, label: str, status: dict[str, Any], metric: str, value: Any) -> None:
        self.running -= 1
        self.finished_here += 1
        if status["state"] == "done":
            self.done += 1
        else:
            self.failed += 1
        elapsed = time.perf_counter() - self.started
        left = self.total - self.done - self.failed - self.running
        eta = elapsed / self.finished_here * (left + self.running / 2)
        if status["state"] == "done":
            what = f"valid {metric} {value:.4f}" if isinstance(value, float) else "done"
        else:
            what = f"[red]failed[/red]: {status.get('error')}"
        line = (
            f"[{self.done + self.failed}/{self.total}] {label}: {what} "
            f"({status.get('wall_seconds', 0):.1f} s; {left} left, ETA {eta / 60:.1f} min)"
        )
        self.console.print(line, highlight=False, soft_wrap=True)
        self.progress.update(
            self.task, completed=self.done + self.failed, description=self._text("")
        )


def run_experiment(
    source: str | Path | dict[str, Any] | Experiment,
    *,
    dry_run: bool = False,
    variables: dict[str, str] | None = None,
    backend: str = "local",
    address: str | None = None,
    threads: int | None = None,
    console: Any = None,
    progress: bool = True,
    only: Iterable[str] = (),
) -> ExperimentRun:
    """Run every cell of an experiment that has not finished; write the results table.

    Args:
        source: an experiment file, its parsed content, or a loaded :class:`Experiment`.
        dry_run: plan only: name the runs and report their states, train nothing.
        variables: ``${name}`` values overriding the file's.
        backend: ``"local"`` (one run at a time in this process) or ``"ray"``.
        address: an existing Ray cluster (``ray`` backend); default: a local Ray instance.
        threads: torch threads per run; default the file's ``threads``, else all cores for
            local runs and 1 per run on Ray (so runs x threads <= cores).
        only: run only the cells these filters pick (:func:`select_runs`); the results table
            still holds every cell.
    """
    from rich.console import Console

    experiment = source if isinstance(source, Experiment) else load_experiment(source, variables)
    if backend not in ("local", "ray"):
        raise ConfigError(f"backend {backend!r} is unknown; use local or ray")
    if experiment.spec.log is not None and not dry_run:
        _check_logger(experiment)
    console = console or Console(quiet=not progress)
    started = time.perf_counter()
    inputs = Inputs()
    runs = plan(experiment, inputs)
    selected = select_runs(runs, only, experiment.where)
    picked = [i for i, pick in enumerate(selected) if pick]
    if not dry_run and any(runs[i].waiting for i in picked):
        runs = prepare_features(experiment, [runs[i] for i in picked], inputs, console.print)
    statuses = {id(run): run_state(run) for run in runs}
    records = {id(run): run_record(run, statuses[id(run)]) for run in runs}
    chosen = [runs[i] for i in picked]  # replanned after extraction: same cells, same order
    todo = [
        run
        for run in chosen
        if run.run_dir is not None
        and statuses[id(run)]["state"] in ("pending", "interrupted", "failed")
    ]
    executed = 0
    if not dry_run:
        cores = os.cpu_count() or 1
        per_run = threads or experiment.spec.threads or (cores if backend == "local" else 1)
        per_run = max(1, min(per_run, cores))
        done = sum(1 for run in chosen if statuses[id(run)]["state"] == "done")
        failed_inputs = sum(1 for run in chosen if run.problem is not None)
        total = done + failed_inputs + len(todo)
        output = experiment.output_dir
        write_results(output, results_frame(records.values()))
        with GridProgress(total, done, console, progress) as display:
            display.failed = failed_inputs

            last_write = [time.perf_counter()]

            def finished(run: PlannedRun, status: dict[str, Any]) -> None:
                records[id(run)] = run_record(run, status)
                value = records[id(run)].get(f"valid.{experiment.spec.select}")
                display.finished_run(run.cell.label(), status, experiment.spec.select, value)
                # the table is rewritten at most every few seconds (0.2 s for 9,000 rows) and
                # at the end; the run directories hold the truth in between
                if time.perf_counter() - last_write[0] > RESULTS_EVERY_SECONDS:
                    write_results(output, results_frame(records.values()))
                    last_write[0] = time.perf_counter()

            try:
                if not todo:
                    executed = 0
                elif backend == "local":
                    executed = _run_local(todo, inputs, per_run, display, finished, experiment)
                else:
                    _run_ray(todo, per_run, address, display, finished, experiment)
                    executed = len(todo)
            finally:  # Ctrl-C included: the table says what was done
                write_results(output, results_frame(records.values()))
    frame = results_frame(records.values())
    elapsed = time.perf_counter() - started
    return ExperimentRun(experiment, runs, frame, executed, elapsed, selected)


def _check_logger(experiment: Experiment) -> None:
    """``log:`` needs its package: a clear error before any run starts."""
    package, extra = {
        "tensorboard": ("tensorboard", "tensorboard"),
        "mlflow": ("mlflow", "mlflow"),
    }[experiment.spec.log or ""]
    try:
        __import__(package)
    except ImportError:
        raise ConfigError(
            f"{experiment.where}: log: {experiment.spec.log} needs the {package} package: "
            f"pip install 'lmmrec[{extra}]'"
        ) from None


def mlflow_settings(experiment: Experiment, run: PlannedRun) -> dict[str, Any] | None:
    """Where and how ``run`` is logged to MLflow (``None`` unless the file says ``log: mlflow``):
    the file's ``mlflow_uri`` or the experiment's local store, its name, the cell as tags."""
    if experiment.spec.log != "mlflow":
        return None
    cell = run.cell
    tags = {"dataset": cell.dataset, "model": cell.model, "point": cell.point_key}
    tags |= {"seed": str(cell.seed), "lmmrec.run_id": str(run.run_id)}
    tags |= {k: v for k, v in (("encoder", cell.encoder), ("paradigm", cell.paradigm)) if v}
    return {
        "uri": experiment.spec.mlflow_uri or default_mlflow_uri(experiment.output_dir),
        "experiment": experiment.name,
        "tags": tags,
    }


def _run_local(
    todo: list[PlannedRun],
    inputs: Inputs,
    threads: int,
    display: GridProgress,
    finished: Callable[[PlannedRun, dict[str, Any]], None],
    experiment: Experiment,
) -> int:
    """Run ``todo`` one after the other; returns how many this process ran."""
    spec = experiment.spec
    metric = spec.select
    executed = 0
    for run in todo:
        assert run.run_dir is not None
        if run_state(run)["state"] in ("running", "done"):  # another runner took it meanwhile
            continue
        executed += 1
        label = run.cell.label()
        display.started_run(label)

        def on_epoch(*args: Any, label: str = label) -> None:
            # callback(trainer, record) (callback(record) in older trainers): the record is last
            with contextlib.suppress(Exception):  # a display problem never fails a run
                display.epoch(label, args[-1], metric)

        status = execute_run(
            run.cell.config,
            run.run_dir,
            threads=threads,
            dataset=inputs.dataset(run.cell.config["dataset"]),
            callbacks=[on_epoch],
            log=spec.log,
            mlflow=mlflow_settings(experiment, run),
        )
        finished(run, status)
    return executed


_WORKER_DATASETS: dict[str, Any] = {}


def _ray_execute(
    config: dict[str, Any],
    run_dir: str,
    threads: int,
    log: str | None = None,
    mlflow: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Ray task: one run, its dataset loaded once per worker process."""
    from lmmrec.data.loading import load_dataset

    source = config["dataset"]
    try:
        if source not in _WORKER_DATASETS:
            _WORKER_DATASETS.clear()  # one dataset held per worker
            _WORKER_DATASETS[source] = load_dataset(source)
    except Exception as error:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        _write_status(Path(run_dir), "failed", error=one_line(error))
        return {"state": "failed", "error": one_line(error)}
    dataset = _WORKER_DATASETS[source]
    return execute_run(config, run_dir, threads=threads, dataset=dataset, log=log, mlflow=mlflow)


def _run_ray(
    todo: list[PlannedRun],
    threads: int,
    address: str | None,
    display: GridProgress,
    finished: Callable[[PlannedRun, dict[str, Any]], None],
    experiment: Experiment,
) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray backend needs Ray: pip install 'lmmrec[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        on_sigterm = signal.getsignal(signal.SIGTERM)
        ray.init(
            address=address,
            num_cpus=None if address else os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
        if on_sigterm is not None and threading.current_thread() is threading.main_thread():
            # ray.init installs a handler that dumps a stack and exits; keep the caller's (the
            # CLI's turns SIGTERM into KeyboardInterrupt, so the finally below shuts Ray down)
            signal.signal(signal.SIGTERM, on_sigterm)
    try:
        task = ray.remote(num_cpus=threads, max_retries=0)(_ray_execute)
        pending = {}
        for run in todo:
            log, mlflow = experiment.spec.log, mlflow_settings(experiment, run)
            pending[task.remote(run.cell.config, str(run.run_dir), threads, log, mlflow)] = run
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
        while pending:
            display.set_running(min(len(pending), slots), "on Ray")
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                run = pending.pop(ref)
                try:
                    status = ray.get(ref)
                except Exception as error:  # the worker died: the run is failed, not the grid
                    status = {"state": "failed", "error": one_line(error)}
                finished(run, status)
    finally:
        if started_here:
            ray.shutdown()

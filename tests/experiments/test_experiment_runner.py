"""The runner: run names, resume, failures that stay local, threads, validation-only selection."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from experiment_helpers import FEATURES, tiny_spec

import lmmrec.training
import lmmrec.training.trainer as trainer_module
from lmmrec.errors import ConfigError
from lmmrec.experiments import experiment_status, load_experiment, run_experiment
from lmmrec.experiments.report import select_points
from lmmrec.experiments.runner import (
    STATUS,
    Inputs,
    _hashed_name,
    execute_run,
    plan,
    resolved_config,
    run_id,
    select_runs,
)
from lmmrec.io import read_json, write_json
from lmmrec.training.config import TrainConfig


def test_runs_are_named_by_config_and_inputs(tiny_source: str, tmp_path: Path) -> None:
    experiment = load_experiment(tiny_spec(tiny_source, tmp_path))
    runs = plan(experiment)
    ids = [run.run_id for run in runs]
    assert None not in ids and len(set(ids)) == len(ids) == 8
    assert ids == [run.run_id for run in plan(experiment)]  # stable
    assert all(run.run_dir == tmp_path / "runs" / run.run_id for run in runs)
    # the same data at another path is the same run; the same config on other data is another
    other = planted_copy(tiny_source, tmp_path / "other")
    moved = plan(load_experiment(tiny_spec(other, tmp_path)))
    assert {r.inputs["dataset"] for r in moved} == {runs[0].inputs["dataset"]}
    assert [run.run_id for run in moved] == ids
    changed = dict(runs[0].inputs, dataset="0" * 16)
    assert run_id(runs[0].cell, changed) != runs[0].run_id


def test_runs_named_with_the_dataset_path_are_found_under_that_name(
    tiny_source: str, tmp_path: Path
) -> None:
    experiment = load_experiment(tiny_spec(tiny_source, tmp_path))
    first = plan(experiment)[0]
    legacy = run_id(first.cell, first.inputs, with_dataset_path=True)
    assert legacy != first.run_id
    (tmp_path / "runs" / legacy).mkdir(parents=True)
    assert plan(experiment)[0].run_dir == tmp_path / "runs" / legacy
    (tmp_path / "runs" / first.run_id).mkdir()  # a run under today's name wins
    assert plan(experiment)[0].run_dir == tmp_path / "runs" / first.run_id


def test_a_setting_at_its_neutral_default_leaves_run_names_as_they_were(
    tiny_source: str, tmp_path: Path
) -> None:
    """`negatives` came after runs were recorded: at "all" (the behaviour before it) a run's
    name is that of its configuration without the setting; "trained" is another run."""
    runs = plan(load_experiment(tiny_spec(tiny_source, tmp_path)))
    for run in runs:
        before = resolved_config(run.cell)
        assert before["train"].pop("negatives") == "all"  # as an lmmrec before it wrote it
        assert _hashed_name(run.cell.model, before, run.inputs, False) == run.run_id
    train = {"epochs": 2, "batch_size": 128, "eval_batch_size": 64, "negatives": "trained"}
    other = plan(load_experiment(tiny_spec(tiny_source, tmp_path, train=train)))
    assert not {run.run_id for run in runs} & {run.run_id for run in other}


def test_two_cells_that_are_one_run_are_refused(tiny_source: str, tmp_path: Path) -> None:
    encoders = {"a": {"features": FEATURES}, "b": {"features": FEATURES}}
    experiment = load_experiment(tiny_spec(tiny_source, tmp_path, encoders=encoders))
    with pytest.raises(
        ConfigError, match=r"cells \[tiny vbpr a .*\] and \[tiny vbpr b .*\] are the same run"
    ):
        plan(experiment)


def planted_copy(source: str, target: Path) -> str:
    from lmmrec.data.loading import load_dataset

    load_dataset(source).save(target)
    return str(target)


def test_dry_run_trains_nothing(tiny_source: str, tmp_path: Path) -> None:
    result = run_experiment(tiny_spec(tiny_source, tmp_path), dry_run=True, progress=False)
    assert result.executed == 0
    assert result.counts()["pending"] == 8
    assert not (tmp_path / "runs").exists()


def test_only_picks_cells_by_key_grid_value_or_run_name(tiny_source: str, tmp_path: Path) -> None:
    runs = plan(load_experiment(tiny_spec(tiny_source, tmp_path)))
    labels = [run.cell.label() for run in runs]

    def picked(*only: str) -> list[str]:
        return [label for label, flag in zip(labels, select_runs(runs, only), strict=True) if flag]

    assert picked() == labels
    assert picked("model=vbpr") == [label for label in labels if " vbpr " in label]
    # one key's values are alternatives, different keys all hold; numbers match as numbers
    assert picked("model=bpr", "seed=2", "lr=5e-2") == ["tiny bpr lr=0.05 seed=2"]
    assert len(picked("reg_weight=0.1", "reg_weight=1e-3")) == 4
    assert picked(runs[3].run_id) == [labels[3]]
    with pytest.raises(ConfigError, match=r"have no 'modle'; filter by dataset, model, .* lr"):
        select_runs(runs, ["modle=bpr"])
    with pytest.raises(ConfigError, match="matches none of the 8 runs"):
        select_runs(runs, ["model=bpr", "reg_weight=0.1"])  # BPR has no reg_weight grid
    with pytest.raises(ConfigError, match="must look like KEY=VALUE"):
        select_runs(runs, ["model="])


def test_only_runs_the_picked_cells_and_keeps_every_row(tiny_source: str, tmp_path: Path) -> None:
    result = run_experiment(tiny_spec(tiny_source, tmp_path), only=["model=bpr"], progress=False)
    assert result.executed == 4
    table = pd.read_parquet(tmp_path / "results.parquet")
    assert len(table) == 8
    assert set(table.loc[table["model"] == "bpr", "state"]) == {"done"}
    assert set(table.loc[table["model"] == "vbpr", "state"]) == {"pending"}
    assert result.selected == list(table["model"] == "bpr")


def test_run_then_resume_executes_nothing(tiny_source: str, tmp_path: Path) -> None:
    spec = tiny_spec(tiny_source, tmp_path)
    first = run_experiment(spec, progress=False)
    assert first.executed == 8 and first.counts()["done"] == 8
    table = pd.read_parquet(tmp_path / "results.parquet")
    assert len(table) == 8 and (table["state"] == "done").all()
    assert table["valid.recall@20"].notna().all() and table["test.ndcg@10"].notna().all()
    config = json.loads(table["config"].iloc[0])
    assert config["train"]["epochs"] == 2
    if hasattr(trainer_module, "TEST_USERS"):  # the trainer keeps per-user test metrics
        for _, row in table.iterrows():
            with np.load(Path(row["run_dir"]) / trainer_module.TEST_USERS) as per_user:
                assert per_user["users"].dtype == np.int64
                mean = float(per_user["recall@20"].mean())
            assert mean == pytest.approx(row["test.recall@20"])
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/metrics.json")}
    second = run_experiment(spec, progress=False)
    assert second.executed == 0 and second.counts()["done"] == 8
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/metrics.json")}


def test_an_interrupted_run_resumes_from_its_checkpoint(tiny_source: str, tmp_path: Path) -> None:
    train = {"epochs": 4, "batch_size": 128}
    if "checkpoint_every_epochs" in TrainConfig.model_fields:  # checkpoint every epoch
        train["checkpoint_every_epochs"] = 1
    spec = tiny_spec(tiny_source, tmp_path, seeds=[1], train=train)
    spec["models"] = {"bpr": {"params": {"embedding_size": 8}}}
    (run,) = plan(load_experiment(spec))
    assert run.run_dir is not None

    def stop_after_two(*args: Any) -> None:
        if args[-1]["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute_run(run.cell.config, run.run_dir, callbacks=[stop_after_two])
    _, states = experiment_status(spec)
    assert list(states["state"]) == ["interrupted"]
    epochs_seen: list[int] = []
    original = lmmrec.training.train

    def spy(*args: Any, **kwargs: Any) -> Any:
        kwargs["callbacks"] = [
            *(kwargs.get("callbacks") or []),
            lambda *a: epochs_seen.append(a[-1]["epoch"]),
        ]
        return original(*args, **kwargs)

    lmmrec.training.train = spy
    try:
        result = run_experiment(spec, progress=False)
    finally:
        lmmrec.training.train = original
    assert result.executed == 1 and result.counts()["done"] == 1
    assert epochs_seen == [3, 4]  # epochs 1-2 came from the checkpoint
    assert read_json(run.run_dir / "metrics.json")["epochs_run"] == 4


def test_a_killed_runner_leaves_its_run_interrupted(tiny_source: str, tmp_path: Path) -> None:
    spec = tiny_spec(tiny_source, tmp_path, seeds=[1])
    run = plan(load_experiment(spec))[0]
    assert run.run_dir is not None
    run.run_dir.mkdir(parents=True)
    dead = 2**22 + 12345  # above the default pid_max: no such process
    status = {"state": "running", "host": os.uname().nodename, "pid": dead}
    write_json(run.run_dir / STATUS, status)
    _, states = experiment_status(spec)
    assert states["state"].tolist().count("interrupted") == 1
    write_json(run.run_dir / STATUS, {**status, "pid": os.getpid()})
    _, states = experiment_status(spec)
    assert states["state"].tolist().count("running") == 1


def test_a_failed_cell_never_stops_the_others(
    tiny_source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tiny_spec(tiny_source, tmp_path)
    spec["encoders"]["missing"] = {"features": "no-such-features"}
    original = lmmrec.training.train

    def flaky(config: Any, **kwargs: Any) -> Any:
        if config.model == "bpr" and config.train.seed == 2:
            raise RuntimeError("boom\nsecond line")
        return original(config, **kwargs)

    monkeypatch.setattr(lmmrec.training, "train", flaky)
    result = run_experiment(spec, progress=False)
    counts = result.counts()
    # 4 vbpr cells lack their features (failed before running), 2 bpr cells raise
    assert counts == {"done": 6, "running": 0, "interrupted": 0, "failed": 6, "pending": 0}
    failed = result.results[result.results["state"] == "failed"]
    assert set(failed["error"]) == {
        "RuntimeError: boom",
        "dataset "
        + repr(tiny_source)
        + " has no feature set 'no-such-features' (it has: rand); extract it with `lmmrec "
        "encode` or give the encoder an extract: spec",
    }
    boom = failed[failed["error"] == "RuntimeError: boom"]
    assert all("second line" in (Path(d) / "error.txt").read_text() for d in boom["run_dir"])
    # the next run retries the failed cells that can run (and only them)
    monkeypatch.setattr(lmmrec.training, "train", original)
    again = run_experiment(spec, progress=False)
    assert again.executed == 2 and again.counts()["done"] == 8


def test_each_run_gets_its_thread_count(tiny_source: str, tmp_path: Path) -> None:
    spec = tiny_spec(tiny_source, tmp_path, seeds=[1])
    (run,) = [r for r in plan(load_experiment(spec)) if r.cell.model == "bpr"][:1]
    seen: list[int] = []
    before = torch.get_num_threads()
    status = execute_run(
        run.cell.config,
        run.run_dir,
        threads=1,
        callbacks=[lambda *a: seen.append(torch.get_num_threads())],
    )
    assert status["state"] == "done"
    assert set(seen) == {1}
    assert torch.get_num_threads() == before


def _results(rows: list[tuple[str, int, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "state": "done",
                "dataset": "d",
                "model": "vbpr",
                "encoder": "e",
                "paradigm": "frozen",
                "point": json.dumps({"reg_weight": point}),
                "seed": seed,
                "run_dir": f"/runs/{point}-{seed}",
                "valid.recall@20": valid,
                "test.recall@20": test,
            }
            for point, seed, valid, test in rows
        ]
    )


def test_selection_uses_validation_only() -> None:
    # point 0.1 is best on validation, point 1.0 is best on test: 0.1 must be chosen
    results = _results(
        [
            ("0.1", 1, 0.30, 0.20),
            ("0.1", 2, 0.32, 0.22),
            ("1.0", 1, 0.25, 0.40),
            ("1.0", 2, 0.27, 0.42),
        ]
    )
    (row,) = select_points(results, "recall@20", ["recall@20"]).itertuples()
    assert json.loads(row.point) == {"reg_weight": "0.1"}
    assert row.valid == pytest.approx(0.31)
    assert row._11 if False else True
    selected = select_points(results, "recall@20", ["recall@20"]).iloc[0]
    assert selected["recall@20.mean"] == pytest.approx(0.21)
    assert selected["recall@20.std"] == pytest.approx(np.std([0.20, 0.22], ddof=1))
    assert selected["seeds"] == 2 and selected["points"] == 2


def test_selection_averages_seeds_before_choosing() -> None:
    # one lucky seed must not win: 0.1 has the best single run but the worse mean
    results = _results(
        [("0.1", 1, 0.50, 0.1), ("0.1", 2, 0.10, 0.1), ("1.0", 1, 0.35, 0.1), ("1.0", 2, 0.35, 0.1)]
    )
    selected = select_points(results, "recall@20", ["recall@20"]).iloc[0]
    assert json.loads(selected["point"]) == {"reg_weight": "1.0"}
    assert not math.isnan(selected["recall@20.mean"])


def test_inputs_load_each_dataset_once(tiny_source: str) -> None:
    inputs = Inputs()
    assert inputs.dataset(tiny_source) is inputs.dataset(tiny_source)


def test_tensorboard_logging_writes_every_runs_curves(tiny_source: str, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = tiny_spec(tiny_source, tmp_path, seeds=[1], log="tensorboard")
    spec["models"] = {"bpr": {"params": {"embedding_size": 8}}}
    result = run_experiment(spec, progress=False)
    (run_dir,) = result.results["run_dir"]
    events = EventAccumulator(str(Path(run_dir) / "tensorboard"))
    events.Reload()
    assert {"train/loss", "valid/recall@20"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]


def test_progress_lines_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a log file every start and finish gets a line; the estimate is the mean wall time per
    finished run times the runs left, those in flight counted as half done."""
    import io

    from rich.console import Console

    import lmmrec.experiments.runner as runner_module
    from lmmrec.experiments.runner import GridProgress

    clock = iter([100.0, 160.0])  # started at 100 s; the first run finishes at 160 s
    monkeypatch.setattr(runner_module.time, "perf_counter", lambda: next(clock))
    out = io.StringIO()
    console = Console(file=out, width=40, force_terminal=False)  # lines never wrap
    with GridProgress(total=6, done=1, console=console, enabled=True) as display:
        display.started_run("a")
        display.started_run("b")
        display.started_run("c")
        display.finished_run("a", {"state": "done", "wall_seconds": 58.0}, "recall@20", 0.25)
    lines = out.getvalue().splitlines()
    assert lines[0] == "started a (done 1 · running 1 · failed 0 · left 4)"
    assert lines[2].startswith("started c (done 1 · running 3")
    # 60 s for one run; 2 left to start and 2 in flight: (2 + 2 / 2) x 60 s = 3.0 min
    assert lines[3] == "[2/6] a: valid recall@20 0.2500 (58.0 s; 2 left, ETA 3.0 min)"

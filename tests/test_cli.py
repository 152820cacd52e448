"""The command line: each command end to end on a tiny dataset folder, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lmmrec.cli import app
from lmmrec.data.dataset import Dataset
from lmmrec.errors import ConfigError
from lmmrec.io import read_json

runner = CliRunner()


@pytest.fixture
def dataset_dir(tiny_dataset: Dataset, tmp_path: Path) -> Path:
    folder = tmp_path / "planted"
    tiny_dataset.save(folder)
    return folder


def test_dataset_info_prints_statistics(dataset_dir: Path) -> None:
    result = runner.invoke(app, ["dataset", "info", str(dataset_dir)])
    assert result.exit_code == 0, result.output
    assert "users" in result.output and "60" in result.output
    assert "sparsity" in result.output


def test_train_then_evaluate(dataset_dir: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = runner.invoke(
        app,
        [
            "train",
            "--dataset",
            str(dataset_dir),
            "--model",
            "bpr",
            "epochs=3",
            "batch_size=64",
            f"output_dir={runs}",
            "name=cli",
            "embedding_size=8",
            "ks=[5,10]",
        ],
    )
    assert result.exit_code == 0, result.output
    run_dir = runs / "cli"
    config = read_json(run_dir / "config.json")
    assert config["train"]["epochs"] == 3 and config["model_params"]["embedding_size"] == 8
    metrics = read_json(run_dir / "metrics.json")
    assert len(metrics["history"]) == 3
    evaluated = runner.invoke(app, ["evaluate", str(run_dir)])
    assert evaluated.exit_code == 0, evaluated.output
    assert f"{metrics['test']['recall@20']:.4f}" in evaluated.output
    pools = runner.invoke(app, ["evaluate", str(run_dir), "--pools"])
    assert pools.exit_code == 0, pools.output
    # every item of the planted data has training interactions: warm is all, no cold rows
    assert "test all" in pools.output and "test warm" in pools.output
    assert "test cold" not in pools.output
    assert pools.output.count(f"{metrics['test']['recall@20']:.4f}") == 2


def test_models_lists_the_registry() -> None:
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    flat = "".join(result.output.split())  # rich wraps table cells at the terminal width
    assert "lightgcn" in flat and "n_layers=3" in flat


def _commands(group: typer.Typer, prefix: str = "lmmrec") -> dict[str, str]:
    """``{"lmmrec data amazon": docstring, ...}`` for every command under ``group``."""
    found = {}
    for command in group.registered_commands:
        name = command.name or command.callback.__name__.replace("_", "-")
        found[f"{prefix} {name}"] = command.callback.__doc__ or ""
    for sub in group.registered_groups:
        found.update(_commands(sub.typer_instance, f"{prefix} {sub.name}"))
    return found


def test_every_command_summary_is_one_line() -> None:
    """The command tables of ``--help`` show each docstring's first paragraph as written: a
    summary wrapped over several lines there breaks mid-sentence, so it must be one line."""
    commands = _commands(app)
    assert {"lmmrec train", "lmmrec export", "lmmrec data amazon", "lmmrec experiment run"} <= set(
        commands
    )
    for name, doc in commands.items():
        summary = doc.strip().split("\n\n")[0]
        assert summary and "\n" not in summary, f"{name}: {summary!r}"


def test_user_errors_print_one_line_without_traceback(dataset_dir: Path, tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmmrec",
            "train",
            "--dataset",
            str(dataset_dir),
            "--model",
            "no_such_model",
            f"output_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown model 'no_such_model'")


def test_demo_runs_the_chosen_models_through_the_runner_and_skips_them_when_repeated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LMMREC_HOME", str(tmp_path / "home"))
    args = ["demo", "--zoo", "--models", "bpr", "--epochs", "1", "--output", str(tmp_path / "runs")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "bpr" in result.output and "lightgcn" not in result.output
    assert "[1/1] shop bpr seed=2022: valid recall@20" in result.output  # the runner's line
    assert "every model with its defaults" in result.output
    (run_dir,) = (tmp_path / "runs" / "runs").iterdir()
    assert run_dir.name.startswith("bpr-") and (run_dir / "metrics.json").is_file()
    assert (tmp_path / "runs" / "results.parquet").is_file()
    assert "new" in result.output and (run_dir / "pools.json").is_file()  # the new items

    again = runner.invoke(app, args)  # a finished run is never repeated: the table only
    assert again.exit_code == 0, again.output
    assert "[1/1]" not in again.output and "every model with its defaults" in again.output
    assert [p.name for p in (tmp_path / "runs" / "runs").iterdir()] == [run_dir.name]


def test_demo_rejects_an_unknown_model_before_doing_any_work(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--models", "bpr,nosuchmodel"])
    assert isinstance(result.exception, ConfigError)  # printed as one line by the entry point
    assert "nosuchmodel" in str(result.exception) and "lightgcn" in str(result.exception)
    assert "loading" not in result.output

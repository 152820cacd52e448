"""`lmmrec experiment run|status|report`: thin commands over the library."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from experiment_helpers import tiny_spec
from typer.testing import CliRunner

from lmmrec.cli import app
from lmmrec.errors import ConfigError

runner = CliRunner()


def _file(tmp_path: Path, source: str, **changes: object) -> Path:
    spec = tiny_spec(source, tmp_path / "out", **changes)
    spec["models"] = {"bpr": spec["models"]["bpr"]}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_dry_run_then_run_status_and_report(tiny_source: str, tmp_path: Path) -> None:
    path = _file(tmp_path, tiny_source)
    result = runner.invoke(app, ["experiment", "run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "4 runs (dry run)" in result.output and "pending" in result.output
    result = runner.invoke(app, ["experiment", "run", str(path)])
    assert result.exit_code == 0, result.output
    assert "4 run(s) executed" in result.output
    result = runner.invoke(app, ["experiment", "status", str(path)])
    assert result.exit_code == 0 and "4 runs" in result.output
    result = runner.invoke(app, ["experiment", "report", str(path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "report.html").is_file() and "R@20" in result.output
    # the planted data has no cold items: the report says so instead of a cold-start table
    result = runner.invoke(app, ["experiment", "report", str(path), "--pools"])
    assert result.exit_code == 0, result.output
    assert "no test interaction is with a cold item" in result.output


def test_dry_run_lists_the_cells_only_picks(tiny_source: str, tmp_path: Path) -> None:
    path = _file(tmp_path, tiny_source)
    result = runner.invoke(app, ["experiment", "run", str(path), "--dry-run", "--only", "seed=2"])
    assert result.exit_code == 0, result.output
    assert "4 runs (2 picked by --only) (dry run)" in result.output
    assert "seed=2" in result.output and "seed=1" not in result.output
    result = runner.invoke(app, ["experiment", "status", str(path), "--only", "lr=5e-2"])
    assert result.exit_code == 0, result.output
    assert "tiny: 2 runs" in result.output
    result = runner.invoke(app, ["experiment", "run", str(path), "--only", "sede=2"])
    assert isinstance(result.exception, ConfigError)
    assert "have no 'sede'; filter by dataset, model" in str(result.exception)


def test_status_shows_a_failed_runs_error(tiny_source: str, tmp_path: Path) -> None:
    path = _file(tmp_path, tiny_source, seeds=[1])
    spec = yaml.safe_load(path.read_text())
    spec["models"]["vbpr"] = {}
    spec["encoders"] = {"gone": {"features": "gone"}}
    path.write_text(yaml.safe_dump(spec))
    result = runner.invoke(app, ["experiment", "status", str(path)])
    assert result.exit_code == 0
    assert "failed" in result.output and "no feature set 'gone'" in result.output


def test_a_bad_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("datasets: {a: demo}\nmodels: [vbrp]\n")
    result = runner.invoke(app, ["experiment", "run", str(path), "--dry-run"])
    assert isinstance(result.exception, ConfigError)
    assert "did you mean 'vbpr'" in str(result.exception)
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        from lmmrec.cli.experiment import _variables

        _variables(["novalue"])


def test_sigterm_stops_a_grid_as_ctrl_c_does(tiny_source: str, tmp_path: Path) -> None:
    """`kill PID` marks the run in progress interrupted (resumable), with no traceback."""
    path = _file(tmp_path, tiny_source, seeds=[1])
    spec = yaml.safe_load(path.read_text())
    spec["models"]["bpr"]["grid"] = {"lr": [0.01]}
    spec["train"] |= {"epochs": 100_000, "patience": 100_000}
    path.write_text(yaml.safe_dump(spec))
    process = subprocess.Popen(
        [sys.executable, "-m", "lmmrec", "experiment", "run", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    runs = tmp_path / "out" / "runs"
    deadline = time.monotonic() + 120
    logs = lambda: "".join(p.read_text() for p in runs.glob("*/log.txt"))  # noqa: E731
    while "epoch 1:" not in logs() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr  # 130: as after Ctrl-C
    (status,) = [json.loads(p.read_text()) for p in runs.glob("*/status.json")]
    assert status["state"] == "interrupted"

"""`lmmrec experiment run|status|report`: thin commands over the library."""

from __future__ import annotations

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

"""The Ray path: a tiny grid through a real local Ray instance (skipped without Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest
from experiment_helpers import tiny_spec

from lmmrec.experiments import run_experiment

ray = pytest.importorskip("ray")


def test_a_tiny_grid_runs_on_local_ray_and_resumes(tiny_source: str, tmp_path: Path) -> None:
    spec = tiny_spec(tiny_source, tmp_path)
    spec["models"] = {"bpr": spec["models"]["bpr"]}
    spec["encoders"] = {}
    result = run_experiment(spec, backend="ray", threads=1, progress=False)
    assert not ray.is_initialized()  # the instance it started is shut down
    assert result.executed == 4 and result.counts()["done"] == 4, result.results["error"].tolist()
    assert result.results["valid.recall@20"].notna().all()
    # resume is unchanged: run directories are shared, nothing is repeated, locally or on Ray
    assert run_experiment(spec, progress=False).executed == 0
    assert run_experiment(spec, backend="ray", progress=False).executed == 0

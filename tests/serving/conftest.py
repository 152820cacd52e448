"""Fixtures of the serving tests: a tiny bundle, and a real uvicorn server on loopback."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_fixtures import tiny_bundle

from lmmrec.data.dataset import Dataset
from lmmrec.serving.background import BackgroundServer
from lmmrec.serving.bundle import Bundle


@pytest.fixture
def bundle(tiny_dataset: Dataset) -> Bundle:
    return tiny_bundle(tiny_dataset)


@pytest.fixture
def bundle_dir(bundle: Bundle, tmp_path: Path) -> Path:
    return bundle.save(tmp_path / "bundle")


def _served(folder: Path) -> Iterator[BackgroundServer]:
    """A real uvicorn server on loopback over the bundle ``folder`` (writes open, no token)."""
    pytest.importorskip("fastapi")
    from lmmrec.serving.api import create_app
    from lmmrec.serving.service import Service

    server = BackgroundServer(create_app(Service.open(folder)))
    yield server
    server.stop()


@pytest.fixture
def live_server(bundle_dir: Path) -> Iterator[BackgroundServer]:
    yield from _served(bundle_dir)


@pytest.fixture(scope="session")
def content_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A frozen VBPR run on ``servingtiny`` features and its exported bundle (made once)."""
    from content_fixtures import frozen_run

    from lmmrec.serving.bundle import export_bundle

    root = tmp_path_factory.mktemp("content")
    run_dir = frozen_run(root)
    return run_dir, export_bundle(run_dir, root / "bundle")


@pytest.fixture
def writable_dir(content_run: tuple[Path, Path], tmp_path: Path) -> Path:
    """A copy of the content bundle that a test may write items into."""
    return Path(shutil.copytree(content_run[1], tmp_path / "bundle"))


@pytest.fixture
def writable_server(writable_dir: Path) -> Iterator[BackgroundServer]:
    """A real uvicorn server on loopback over :func:`writable_dir`, writes open (no token)."""
    yield from _served(writable_dir)

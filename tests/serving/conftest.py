"""Fixtures of the serving tests: a tiny bundle, and a real uvicorn server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_fixtures import LiveServer, tiny_bundle

from lmmrec.data.dataset import Dataset
from lmmrec.serving.bundle import Bundle


@pytest.fixture
def bundle(tiny_dataset: Dataset) -> Bundle:
    return tiny_bundle(tiny_dataset)


@pytest.fixture
def bundle_dir(bundle: Bundle, tmp_path: Path) -> Path:
    return bundle.save(tmp_path / "bundle")


@pytest.fixture
def live_server(bundle_dir: Path) -> Iterator[LiveServer]:
    pytest.importorskip("fastapi")
    from lmmrec.serving.api import create_app
    from lmmrec.serving.service import Service

    server = LiveServer(create_app(Service.open(bundle_dir)))
    yield server
    server.stop()

"""Helpers of the serving tests: seeded exact vectors, a tiny bundle, a live uvicorn server."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np

from lmmrec.data.dataset import Dataset
from lmmrec.serving.bundle import Bundle


def exact_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """Multiples of 1/16: inner products are exact in float32, so every ranking path (blocks,
    batches, a reference product) computes the very same scores."""
    rng = np.random.default_rng(seed)
    return (rng.integers(-40, 41, (n, dim)) / 16).astype(np.float32)


def tiny_bundle(dataset: Dataset) -> Bundle:
    """A bundle of the planted dataset with seeded vectors (no training needed)."""
    return Bundle(
        user_vecs=exact_vectors(dataset.n_users, 8, seed=1),
        item_vecs=exact_vectors(dataset.n_items, 8, seed=2),
        user_ids=[f"u{u}" for u in range(dataset.n_users)],
        item_ids=[f"i{i}" for i in range(dataset.n_items)],
        seen=(dataset.train + dataset.valid + dataset.test).tocsr(),
        texts=[f"item number {i}" for i in range(dataset.n_items)],
        images=[None if i % 3 else f"/images/{i}.jpg" for i in range(dataset.n_items)],
        manifest={"model": "random", "dataset": dataset.name},
    )


class LiveServer:
    """A uvicorn server for ``app`` on 127.0.0.1 (a free port), in a background thread."""

    def __init__(self, app: object) -> None:
        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=20)
        self._socket.close()

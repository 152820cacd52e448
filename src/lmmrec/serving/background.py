"""The HTTP API served from a background thread of this process (a notebook, a test, a benchmark).

``lmmrec serve`` runs uvicorn in the foreground until interrupted; :class:`BackgroundServer` runs
the same application on 127.0.0.1, on a free port, while the caller goes on::

    with BackgroundServer(create_app(Service.open("bundles/demo-vbpr"))) as server:
        Client.connect(server.url).recommend("u00017", k=5)
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

STARTUP_SECONDS = 20.0


class BackgroundServer:
    """A uvicorn server for ``app`` on 127.0.0.1 (a free port) in a daemon thread; ``url`` is
    its address. :meth:`stop` (or leaving the ``with`` block) shuts it down, running the app's
    shutdown (a served bundle's write lock is released).

    Raises:
        RuntimeError: the server did not start within :data:`STARTUP_SECONDS`.
    """

    def __init__(self, app: Any) -> None:
        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise RuntimeError(f"the API server at {self.url} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Shut the server down and wait for its thread."""
        self._server.should_exit = True
        self._thread.join(timeout=STARTUP_SECONDS)
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

"""The HTTP API through a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from lmmrec.serving.background import BackgroundServer
from lmmrec.serving.client import Client
from lmmrec.serving.service import RequestError

pytest.importorskip("fastapi")


def test_health_and_metadata(live_server: BackgroundServer) -> None:
    with httpx.Client(base_url=live_server.url) as http:
        assert http.get("/health").json() == {"status": "ok"}
        meta = http.get("/metadata").json()
    assert (meta["n_users"], meta["n_items"], meta["dim"]) == (60, 40, 8)
    assert meta["index"] == "exact" and meta["model"] == "random"


def test_http_answers_equal_the_in_process_client(
    live_server: BackgroundServer, bundle_dir: Path
) -> None:
    local = Client.open(bundle_dir)
    with Client.connect(live_server.url) as remote:
        assert remote.recommend("u3", k=7) == local.recommend("u3", k=7)
        assert remote.recommend("u3", k=2, candidates=["i1", "i5", "i8"]) == local.recommend(
            "u3", k=2, candidates=["i1", "i5", "i8"]
        )
        assert remote.similar("i10", k=5) == local.similar("i10", k=5)
        assert remote.session(["i1", "i2"], k=5) == local.session(["i1", "i2"], k=5)
        assert remote.metadata() == local.metadata()
        with pytest.raises(RequestError, match="unknown user 'ghost'") as caught:
            remote.recommend("ghost")
        assert caught.value.status == 404


@pytest.mark.parametrize(
    ("path", "body", "status", "field", "words"),
    [
        ("/recommend", {"user": "nobody"}, 404, "user", "unknown user 'nobody'"),
        ("/recommend", {"user": "u1", "k": 0}, 422, "k", "greater than or equal to 1"),
        ("/recommend", {"user": "u1", "k": 1001}, 422, "k", "number of items to return, 1..1000"),
        ("/recommend", {"user": "u1", "k": "ten"}, 422, "k", "valid integer"),
        ("/recommend", {"k": 5}, 422, "user", "required; add it (raw user id"),
        ("/recommend", {"user": "u1", "colour": 1}, 422, "colour", "unknown field; remove it"),
        ("/recommend", {"user": "u1", "candidates": ["i1", "x"]}, 404, "candidates", "'x'"),
        ("/recommend", {"user": "u1", "candidates": [""]}, 422, "candidates.0", "at least 1"),
        ("/recommend", {"user": "u1", "candidates": []}, 422, "candidates", "at least 1"),
        ("/similar", {"item": "nope"}, 404, "item", "unknown item 'nope'"),
        ("/session", {"items": []}, 422, "items", "at least 1"),
        ("/session", {"items": ["i1", "bad"]}, 404, "items", "unknown item id(s) 'bad'"),
        ("/recommend", [1, 2], 422, "body", "valid dictionary"),
    ],
)
def test_bad_requests_name_the_field_and_the_fix(
    live_server: BackgroundServer, path: str, body: object, status: int, field: str, words: str
) -> None:
    response = httpx.post(live_server.url + path, json=body)
    assert response.status_code == status
    error = response.json()
    assert error["field"] == field
    assert error["detail"].startswith(f"{field}: ")
    assert words in error["detail"]


def test_malformed_json_is_a_422(live_server: BackgroundServer) -> None:
    response = httpx.post(
        live_server.url + "/recommend",
        content=b'{"user": "u1", "k": ',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["detail"].startswith("body: malformed JSON")


def test_concurrent_readers_get_the_answers_of_sequential_ones(
    live_server: BackgroundServer,
) -> None:
    requests = [("/recommend", {"user": f"u{u % 60}", "k": 1 + u % 25}) for u in range(120)]
    requests += [("/similar", {"item": f"i{i % 40}", "k": 7}) for i in range(40)]
    requests += [("/session", {"items": [f"i{i}", f"i{i + 1}"], "k": 9}) for i in range(39)]
    with httpx.Client(base_url=live_server.url) as http:
        sequential = [http.post(p, json=b).json() for p, b in requests]

    def fetch(request: tuple[str, dict[str, object]]) -> object:
        with httpx.Client(base_url=live_server.url) as http:
            return http.post(request[0], json=request[1]).json()

    with ThreadPoolExecutor(max_workers=16) as pool:
        concurrent = list(pool.map(fetch, requests))
    assert concurrent == sequential


def test_concurrent_requests_are_ranked_in_shared_batches(bundle_dir: Path) -> None:
    from lmmrec.serving.api import Batcher
    from lmmrec.serving.schemas import RecommendRequest
    from lmmrec.serving.service import Service

    service = Service.open(bundle_dir)
    sizes: list[int] = []

    def run(queries: list[object]) -> list[object]:
        sizes.append(len(queries))
        return service.run(queries)  # type: ignore[arg-type]

    async def main() -> list[object]:
        batcher = Batcher(run, max_batch=4)
        queries = [service.query(RecommendRequest(user=f"u{u}", k=3)) for u in range(10)]
        try:
            return await asyncio.gather(*(batcher.submit(q) for q in queries))
        finally:
            batcher.close()

    answers = asyncio.run(main())
    assert sizes == [4, 4, 2]  # all ten queued before the first batch ran
    assert answers == [service.recommend(RecommendRequest(user=f"u{u}", k=3)) for u in range(10)]


def test_export_and_serve_commands(bundle_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lmmrec.cli import app

    result = CliRunner().invoke(app, ["serve", str(tmp_path / "missing"), "--port", "1"])
    assert result.exit_code != 0
    assert "not a serving bundle" in str(result.exception)
    result = CliRunner().invoke(app, ["export", str(tmp_path), str(tmp_path / "b")])
    assert "not a run directory" in str(result.exception)

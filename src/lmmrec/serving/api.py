"""The HTTP API: FastAPI in front of a :class:`~lmmrec.serving.service.Service`.

Endpoints (OpenAPI schema at ``/openapi.json``, interactive docs at ``/docs``):

- ``GET /health``, ``GET /metadata``
- ``POST /recommend`` (:class:`RecommendRequest`): top-K for a known user
- ``POST /similar`` (:class:`SimilarRequest`): items closest to an item
- ``POST /session`` (:class:`SessionRequest`): top-K for an anonymous session's items

Concurrent requests are ranked together: each request's query joins a queue, and one worker
thread ranks everything queued with one matrix product while new requests queue for the next
batch (:class:`Batcher`). Under load a request costs a share of a batched product instead of a
product of its own; alone, it costs one product. :func:`serve` runs torch, BLAS and faiss on
one thread by default: a batch is a few milliseconds of small operations, and a second intra-op
thread would compete for the cores with the event loop (and a load generator), each parallel
operation then waiting for a scheduler slice (with 8 clients on 2 shared cores, about a tenth
of the requests/s: ``benchmarks/README.md``).

Every rejected request gets a 4xx whose JSON body is :class:`~lmmrec.serving.schemas.Error`:
``{"detail": "<field>: <problem>; <fix>", "field": "<field>"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

import lmmrec
from lmmrec.serving.schemas import (
    Error,
    Health,
    Metadata,
    Ranking,
    RecommendRequest,
    SessionRequest,
    SimilarRequest,
)
from lmmrec.serving.service import Query, RequestError, Service

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Error, "description": "a raw id in the request is not in the bundle"},
    422: {"model": Error, "description": "a field is missing, malformed or out of range"},
}
_HINTS = {
    name: field.description
    for model in (RecommendRequest, SimilarRequest, SessionRequest)
    for name, field in model.model_fields.items()
}


class Batcher:
    """Ranks concurrently submitted queries together, in one worker thread.

    Args:
        run: ranks a list of queries (:meth:`Service.run`).
        max_batch: most queries in one batch.
    """

    def __init__(self, run: Callable[[Sequence[Query]], list[Ranking]], max_batch: int) -> None:
        self._run = run
        self._max_batch = max_batch
        self._pending: list[tuple[Query, asyncio.Future[Ranking]]] = []
        self._drainer: asyncio.Task[None] | None = None  # held: the loop keeps weak references
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmmrec-rank")

    async def submit(self, query: Query) -> Ranking:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Ranking] = loop.create_future()
        self._pending.append((query, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                rankings = await loop.run_in_executor(
                    self._executor, self._run, [query for query, _ in batch]
                )
            except Exception as error:  # every waiting request gets the failure
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), ranking in zip(batch, rankings, strict=True):
                if not future.done():  # its client may have gone away
                    future.set_result(ranking)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def create_app(service: Service, max_batch: int = 64) -> FastAPI:
    """The FastAPI application serving ``service``."""
    batcher = Batcher(service.run, max_batch)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()

    app = FastAPI(
        title="lmmrec",
        version=lmmrec.__version__,
        summary="Top-K recommendations from an lmmrec serving bundle.",
        lifespan=lifespan,
    )

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, error: RequestError) -> JSONResponse:
        body = Error(detail=str(error), field=error.field)
        return JSONResponse(body.model_dump(), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        field, detail = _describe(error.errors())
        return JSONResponse(Error(detail=detail, field=field).model_dump(), status_code=422)

    @app.get("/health")
    async def health() -> Health:
        """Answers while the service runs."""
        return Health(status="ok")

    @app.get("/metadata")
    async def metadata() -> Metadata:
        """The served bundle: model, dataset, sizes, index, metrics at export."""
        return service.metadata()

    @app.post("/recommend", responses=ERRORS)
    async def recommend(request: RecommendRequest) -> Ranking:
        """Top-K items for a known user (raw id), seen items left out unless asked."""
        return await batcher.submit(service.query(request))

    @app.post("/similar", responses=ERRORS)
    async def similar(request: SimilarRequest) -> Ranking:
        """The items whose vectors have the largest inner product with the item's vector."""
        return await batcher.submit(service.query(request))

    @app.post("/session", responses=ERRORS)
    async def session(request: SessionRequest) -> Ranking:
        """Top-K items for an anonymous session, from the mean of its items' vectors."""
        return await batcher.submit(service.query(request))

    return app


def _describe(errors: Sequence[Any]) -> tuple[str, str]:
    """``(field, "field: problem; fix")`` for the first of pydantic's validation errors."""
    if not errors:
        return "body", "body: invalid request; send a JSON object as described at /docs"
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    field = ".".join(location) or "body"
    kind = first.get("type", "")
    if kind == "json_invalid":
        reason = first.get("ctx", {}).get("error", "invalid JSON")
        return "body", f'body: malformed JSON ({reason}); send one JSON object, e.g. {{"k": 20}}'
    if kind == "missing":
        return field, f"{field}: required; add it ({_HINTS.get(location[-1], 'see /docs')})"
    if kind == "extra_forbidden":
        return field, f"{field}: unknown field; remove it (the fields are listed at /docs)"
    shown = repr(first.get("input"))
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    hint = _HINTS.get(location[0], "see /docs") if location else "send one JSON object"
    return field, f"{field}: {first.get('msg', 'invalid value')} (got {shown}); {hint}"


def serve(
    bundle: str | Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    index: str = "exact",
    nprobe: int = 16,
    threads: int = 1,
) -> None:
    """Load the bundle folder and serve it with uvicorn until interrupted.

    ``threads`` caps the threads of torch, of the BLAS that computes the scores and of faiss,
    for the whole process (see the module doc).
    """
    import torch
    import uvicorn
    from threadpoolctl import threadpool_limits

    app = create_app(Service.open(bundle, index=index, nprobe=nprobe))  # loads faiss if asked
    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)  # numpy's OpenBLAS and every OpenMP runtime loaded
    uvicorn.run(app, host=host, port=port, log_level="warning")

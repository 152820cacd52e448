"""The HTTP API: FastAPI in front of a :class:`~lmmrec.serving.service.Service`.

Endpoints (OpenAPI schema at ``/openapi.json``, interactive docs at ``/docs``):

- ``GET /health``, ``GET /metadata``
- ``POST /recommend`` (:class:`RecommendRequest`): top-K for a known user
- ``POST /similar`` (:class:`SimilarRequest`): items closest to an item
- ``POST /session`` (:class:`SessionRequest`): top-K for an anonymous session's items
- ``POST /items`` (:class:`AddItemsRequest`): add or update items from their text and image
  (base64), encoded in one batch with the bundle's encoder, rankable and durable when answered.
  When the server has a token (``lmmrec serve --token-file`` or ``$LMMREC_SERVE_TOKEN``), writes
  need ``Authorization: Bearer <token>`` (401 without, 403 with another); reads stay open.

Concurrent requests are ranked together: each request's query joins a queue, and one worker
thread ranks everything queued with one matrix product while new requests queue for the next
batch (:class:`Batcher`). Under load a request costs a share of a batched product instead of a
product of its own; alone, it costs one product. :func:`serve` runs torch, BLAS and faiss on
one thread by default: a batch is a few milliseconds of small operations, and a second intra-op
thread would compete for the cores with the event loop (and a load generator), each parallel
operation then waiting for a scheduler slice (with 8 clients on 2 shared cores, about a tenth
of the requests/s: ``benchmarks/README.md``).

Writes run in their own worker thread, so encoding never holds up the ranking batches; the
service swaps the new item set in atomically (:mod:`lmmrec.serving.service`).

Every rejected request gets a 4xx whose JSON body is :class:`~lmmrec.serving.schemas.Error`:
``{"detail": "<field>: <problem>; <fix>", "field": "<field>"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

import lmmrec
from lmmrec.errors import ConfigError
from lmmrec.serving.schemas import (
    AddItemsRequest,
    AddItemsResult,
    Error,
    Health,
    ItemContent,
    Metadata,
    Ranking,
    RecommendRequest,
    SessionRequest,
    SimilarRequest,
)
from lmmrec.serving.service import Query, RequestError, Service
from lmmrec.serving.writes import WriteLimits

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Error, "description": "a raw id in the request is not in the bundle"},
    422: {"model": Error, "description": "a field is missing, malformed or out of range"},
}
TOKEN_ENV = "LMMREC_SERVE_TOKEN"
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Error, "description": "the server has a token and the request sent none"},
    403: {"model": Error, "description": "the request's token is not the server's"},
    409: {"model": Error, "description": "this bundle cannot place new items"},
    413: {"model": Error, "description": "an image or the request is over the size limit"},
    422: ERRORS[422],
    503: {"model": Error, "description": "the bundle's encoder cannot be loaded on this server"},
}
# module level: FastAPI resolves the (postponed) annotations of a dependency in this module
_BEARER = HTTPBearer(auto_error=False, description="needed for writes when the server has one")
_MODELS: dict[str, type[BaseModel]] = {
    "/recommend": RecommendRequest,
    "/similar": SimilarRequest,
    "/session": SessionRequest,
    "/items": AddItemsRequest,
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


class BodyLimit:
    """Refuses a write (``POST /items``) whose declared body is over ``limit`` bytes with a 413,
    before reading it; every other request passes straight through.

    Plain ASGI: Starlette's ``@app.middleware("http")`` would wrap every request, reads included,
    in a task and a copied response stream.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/items":
            size = dict(scope["headers"]).get(b"content-length", b"")
            if size.isdigit() and int(size) > self.limit:
                detail = (
                    f"body: {int(size)} bytes, over the limit of {self.limit}; send fewer items "
                    "per request (or start the server with a larger --max-request-bytes)"
                )
                body = Error(detail=detail, field="body").model_dump()
                await JSONResponse(body, status_code=413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(service: Service, max_batch: int = 64, token: str | None = None) -> FastAPI:
    """The FastAPI application serving ``service``; ``token``: what writes must send."""
    batcher = Batcher(service.run, max_batch)
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmmrec-write")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()
        writer.shutdown(wait=True)
        service.close()

    def authorise(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> None:
        if token is None:
            return
        if credentials is None:
            raise RequestError(
                "authorization",
                "writes need the server's token; send the header Authorization: Bearer <token>",
                status=401,
            )
        if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise RequestError(
                "authorization",
                "wrong token; send the one the server was started with (--token-file or "
                f"${TOKEN_ENV})",
                status=403,
            )

    app = FastAPI(
        title="lmmrec",
        version=lmmrec.__version__,
        summary="Top-K recommendations from an lmmrec serving bundle.",
        lifespan=lifespan,
    )

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, error: RequestError) -> JSONResponse:
        body = Error(detail=str(error), field=error.field)
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse(body.model_dump(), status_code=error.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        field, detail = _describe(error.errors(), _MODELS.get(request.url.path))
        return JSONResponse(Error(detail=detail, field=field).model_dump(), status_code=422)

    app.add_middleware(BodyLimit, limit=service.limits.max_request_bytes)

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

    @app.post("/items", responses=WRITE_ERRORS, dependencies=[Depends(authorise)])
    async def add_items(request: AddItemsRequest) -> AddItemsResult:
        """Add or update items from their text and image (base64); they are rankable and
        durable (journaled in the bundle folder) when the answer comes."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(writer, service.add_items, request)

    return app


def _hint(model: type[BaseModel] | None, location: Sequence[str]) -> str:
    """The description of the field at ``location`` (list positions skipped) in ``model``."""
    hint = "see /docs"
    for part in location:
        field = None if model is None or part.isdigit() else model.model_fields.get(part)
        if field is None:
            continue
        hint = field.description or hint
        model = ItemContent if model is AddItemsRequest and part == "items" else None
    return hint


def _describe(errors: Sequence[Any], model: type[BaseModel] | None = None) -> tuple[str, str]:
    """``(field, "field: problem; fix")`` for the first of pydantic's validation errors of a
    request to ``model``."""
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
        return field, f"{field}: required; add it ({_hint(model, location)})"
    if kind == "extra_forbidden":
        return field, f"{field}: unknown field; remove it (the fields are listed at /docs)"
    shown = repr(first.get("input"))
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    hint = _hint(model, location) if location else "send one JSON object"
    return field, f"{field}: {first.get('msg', 'invalid value')} (got {shown}); {hint}"


def serve(
    bundle: str | Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    index: str = "exact",
    nprobe: int = 16,
    threads: int = 1,
    token: str | None = None,
    limits: WriteLimits | None = None,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Load the bundle folder and serve it with uvicorn until interrupted.

    ``threads`` caps the threads of torch, of the BLAS that computes the scores and of faiss,
    for the whole process (see the module doc). ``token``: what writes must send (default
    ``$LMMREC_SERVE_TOKEN``; none: writes are open). The bundle's encoder, when it has one, is
    loaded here, so that the first write does not wait for it. ``announce`` receives one line
    with the address once the bundle is loaded.
    """
    import logging

    import torch
    import uvicorn
    from threadpoolctl import threadpool_limits

    service = Service.open(bundle, index=index, nprobe=nprobe, limits=limits)  # faiss if asked
    if service.writable:
        try:
            service.placer()
        except RequestError as error:  # reads are still served
            logging.getLogger(__name__).warning("writes are refused: %s", error)
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    warn_open_writes(host, token, service.writable)
    app = create_app(service, token=token)
    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)  # numpy's OpenBLAS and every OpenMP runtime loaded
    if announce is not None:
        announce(f"serving {bundle} on http://{host}:{port} (docs: /docs); Ctrl-C stops")
    uvicorn.run(app, host=host, port=port, log_level="warning")


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def warn_open_writes(host: str, token: str | None, writable: bool) -> bool:
    """Warn (one line) when writes would be open beyond this machine: a writable bundle served on
    a non-loopback ``host`` without a token. Returns whether it warned."""
    if token or not writable or host in LOOPBACK:
        return False
    warnings.warn(
        f"writes (POST /items) are open to anyone who can reach {host}: set a token with "
        f"--token-file or ${TOKEN_ENV}, or serve on 127.0.0.1",
        stacklevel=2,
    )
    return True


def read_token(path: str | Path) -> str:
    """The token in the file ``path`` (surrounding whitespace removed).

    Raises:
        ConfigError: the file cannot be read or holds no token.
    """
    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"--token-file {path}: cannot read it ({error}); check the path"
        ) from None
    if not token:
        raise ConfigError(f"--token-file {path}: the file is empty; write the token into it")
    return token

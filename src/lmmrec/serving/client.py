"""The Python face of the service: the same calls, in-process or over HTTP.

    >>> client = Client.open("bundles/demo-vbpr")            # in-process, no HTTP
    >>> client.recommend("u17", k=10).items[0].item
    >>> remote = Client.connect("http://127.0.0.1:8000")     # a running `lmmrec serve`
    >>> remote.similar("i42", k=5)
    >>> writer = Client.connect("http://127.0.0.1:8000", token="s3cret")
    >>> writer.add_items([item_content("sku-1", text="red mug", image=Path("mug.jpg"))])

Both return the API's response models and raise
:class:`~lmmrec.serving.service.RequestError` (field, problem, fix) for bad requests.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from lmmrec.serving.schemas import (
    AddItemsRequest,
    AddItemsResult,
    Error,
    ItemContent,
    Metadata,
    Ranking,
    RecommendRequest,
    SessionRequest,
    SimilarRequest,
)
from lmmrec.serving.service import RequestError, Service
from lmmrec.serving.writes import WriteLimits


def item_content(
    item: str, text: str | None = None, image: bytes | Path | None = None
) -> ItemContent:
    """An item to add or update: its raw id, text, and image as a file's bytes or path.

    Raises:
        RequestError: a field is invalid (e.g. an empty id), or the image file cannot be read.
    """
    if isinstance(image, Path):
        try:
            image = image.read_bytes()
        except OSError as error:
            raise RequestError("image", f"cannot read {image} ({error.strerror})") from None
    encoded = None if image is None else base64.b64encode(image).decode("ascii")
    return _build(ItemContent, item=item, text=text, image=encoded)


class Client:
    """Recommendations from a bundle, through a local :class:`Service` or an HTTP server.

    Build with :meth:`open` (in-process) or :meth:`connect` (HTTP).
    """

    def __init__(self, service: Service | None = None, http: Any = None) -> None:
        self._service = service
        self._http = http

    @classmethod
    def open(
        cls, bundle: str | Path, index: str = "exact", limits: WriteLimits | None = None
    ) -> Client:
        """Serve the bundle folder in this process (writes are journaled in it)."""
        return cls(service=Service.open(bundle, index=index, limits=limits))

    @classmethod
    def connect(cls, url: str, timeout: float = 60.0, token: str | None = None) -> Client:
        """Talk to a running ``lmmrec serve`` at ``url`` (e.g. ``http://127.0.0.1:8000``);
        ``token``: the server's write token, sent as ``Authorization: Bearer``."""
        import httpx

        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return cls(http=httpx.Client(base_url=url, timeout=timeout, headers=headers))

    def recommend(
        self,
        user: str,
        k: int = 20,
        exclude_seen: bool = True,
        candidates: list[str] | None = None,
    ) -> Ranking:
        """Top-``k`` items for the user with raw id ``user``."""
        request = _build(
            RecommendRequest, user=user, k=k, exclude_seen=exclude_seen, candidates=candidates
        )
        return self._rank("/recommend", request)

    def similar(self, item: str, k: int = 20, candidates: list[str] | None = None) -> Ranking:
        """The ``k`` items closest to the item with raw id ``item``."""
        return self._rank("/similar", _build(SimilarRequest, item=item, k=k, candidates=candidates))

    def session(
        self,
        items: list[str],
        k: int = 20,
        exclude_session: bool = True,
        candidates: list[str] | None = None,
    ) -> Ranking:
        """Top-``k`` items for an anonymous session that interacted with ``items``."""
        request = _build(
            SessionRequest,
            items=items,
            k=k,
            exclude_session=exclude_session,
            candidates=candidates,
        )
        return self._rank("/session", request)

    def add_items(self, items: Sequence[ItemContent]) -> AddItemsResult:
        """Add or update items (:func:`item_content`) in one batch; they are rankable and
        durable on return."""
        request = _build(AddItemsRequest, items=list(items))
        if self._service is not None:
            return self._service.add_items(request)
        return AddItemsResult.model_validate(self._post("/items", request))

    def add_item(
        self, item: str, text: str | None = None, image: bytes | Path | None = None
    ) -> AddItemsResult:
        """Add or update one item from its text and/or image (bytes or a file path)."""
        return self.add_items([item_content(item, text=text, image=image)])

    def metadata(self) -> Metadata:
        if self._service is not None:
            return self._service.metadata()
        return Metadata.model_validate(self._get("/metadata"))

    def close(self) -> None:
        """Close the HTTP connection, or release an in-process service's bundle folder."""
        if self._http is not None:
            self._http.close()
        if self._service is not None:
            self._service.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _rank(self, path: str, request: BaseModel) -> Ranking:
        if self._service is not None:
            return self._service.run([self._service.query(request)])[0]  # type: ignore[arg-type]
        return Ranking.model_validate(self._post(path, request))

    def _post(self, path: str, request: BaseModel) -> Any:
        """The JSON answer of the server; :class:`RequestError` for a 4xx (or 5xx) answer."""
        response = self._http.post(path, json=request.model_dump(mode="json", exclude_none=True))
        if response.status_code >= 400:
            error = Error.model_validate(response.json())
            raise RequestError(
                error.field or "body", error.detail.partition(": ")[2], response.status_code
            )
        return response.json()

    def _get(self, path: str) -> Any:
        response = self._http.get(path)
        response.raise_for_status()
        return response.json()


def _build(model: type[BaseModel], **fields: Any) -> Any:
    """``model(**fields)``; a bad value raises :class:`RequestError` naming the field."""
    try:
        return model(**fields)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "request"
        hint = model.model_fields[str(first["loc"][0])].description if first["loc"] else ""
        raise RequestError(field, f"{first['msg']}; {hint}") from None

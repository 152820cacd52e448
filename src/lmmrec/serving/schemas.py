"""Typed requests and responses of the service, shared by the HTTP API and the Python client.

Ids are the raw ids of the training data (strings). Every field's description says what a valid
value is; a request that breaks one gets a 4xx that names the field and repeats that description.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_K = 1000  # the most items one request may ask for
MAX_ITEMS_PER_REQUEST = 10_000  # candidates or session items in one request
MAX_WRITE_ITEMS = 256  # items added or updated in one request
MAX_TEXT_CEILING = 1_000_000  # characters; the service's own limit (--max-text-chars) is lower
MAX_IMAGE_CEILING = 100_000_000  # base64 characters; the service's --max-image-bytes is lower
RawId = Annotated[str, StringConstraints(min_length=1, max_length=512)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(_Request):
    """Top-K items for a known user."""

    user: RawId = Field(description="raw user id of the training data (string)")
    k: int = Field(20, ge=1, le=MAX_K, description=f"number of items to return, 1..{MAX_K}")
    exclude_seen: bool = Field(
        True, description="leave out the items the user interacted with (train, valid and test)"
    )
    candidates: list[RawId] | None = Field(
        None,
        min_length=1,
        max_length=MAX_ITEMS_PER_REQUEST,
        description=f"rank only these raw item ids (1..{MAX_ITEMS_PER_REQUEST}); null: all items",
    )


class SimilarRequest(_Request):
    """Items whose vectors have the largest inner product with an item's vector."""

    item: RawId = Field(description="raw item id (string)")
    k: int = Field(20, ge=1, le=MAX_K, description=f"number of items to return, 1..{MAX_K}")
    candidates: list[RawId] | None = Field(
        None,
        min_length=1,
        max_length=MAX_ITEMS_PER_REQUEST,
        description=f"rank only these raw item ids (1..{MAX_ITEMS_PER_REQUEST}); null: all items",
    )


class SessionRequest(_Request):
    """Top-K items for an anonymous session: the query is the mean of its items' vectors."""

    items: list[RawId] = Field(
        min_length=1,
        max_length=MAX_ITEMS_PER_REQUEST,
        description=f"raw item ids the session interacted with (1..{MAX_ITEMS_PER_REQUEST})",
    )
    k: int = Field(20, ge=1, le=MAX_K, description=f"number of items to return, 1..{MAX_K}")
    exclude_session: bool = Field(True, description="leave out the session's own items")
    candidates: list[RawId] | None = Field(
        None,
        min_length=1,
        max_length=MAX_ITEMS_PER_REQUEST,
        description=f"rank only these raw item ids (1..{MAX_ITEMS_PER_REQUEST}); null: all items",
    )


class ItemContent(_Request):
    """A new or changed item: its raw id and its content (a text, an image or both)."""

    item: RawId = Field(description="raw item id: a new id adds the item, a known one updates it")
    text: str | None = Field(
        None,
        max_length=MAX_TEXT_CEILING,
        description="the item's text (title, description); at most the service's --max-text-chars",
    )
    image: str | None = Field(
        None,
        max_length=MAX_IMAGE_CEILING,
        description="the image file's bytes (JPEG, PNG, WebP, ...) in base64; at most the "
        "service's --max-image-bytes once decoded",
    )


class AddItemsRequest(_Request):
    """Items to add or update, encoded together (one batch through the encoder)."""

    items: list[ItemContent] = Field(
        min_length=1,
        max_length=MAX_WRITE_ITEMS,
        description=f"1..{MAX_WRITE_ITEMS} items, each with a distinct raw id",
    )


class WrittenItem(BaseModel):
    item: str = Field(description="raw item id")
    status: Literal["added", "updated"] = Field(description="a new item, or a known one replaced")


class AddItemsResult(BaseModel):
    """The items written (durably: they survive a restart) and now rankable."""

    items: list[WrittenItem]
    n_items: int = Field(description="items in the catalogue after the write")


class ScoredItem(BaseModel):
    item: str = Field(description="raw item id")
    score: float = Field(description="inner product of the query and item vectors")


class Ranking(BaseModel):
    """Up to ``k`` items, best first (fewer when exclusions or candidates leave fewer)."""

    items: list[ScoredItem]
    index: str = Field(description="the index that ranked them: exact or faiss")


class Health(BaseModel):
    status: str = Field(description="ok")


class Metadata(BaseModel):
    """What the service serves: the bundle's manifest and sizes."""

    model: str | None
    dataset: str | None
    dataset_hash: str | None
    n_users: int
    n_items: int
    dim: int
    index: str
    max_k: int
    writable: bool = Field(description="whether items can be added from their content")
    metrics: dict[str, Any] | None = Field(description="the run's metrics at export")
    exported_at: str | None


class Error(BaseModel):
    """A rejected request: which field, what is wrong and how to fix it, on one line."""

    detail: str = Field(description="'<field>: <problem>; <fix>'")
    field: str | None = Field(description="the offending field, e.g. 'k' or 'body'")

"""The service without HTTP: requests with raw ids in, rankings with raw ids out.

:class:`Service` turns each request into a :class:`Query` (a query vector ``[D]``, the items it
must not return, optional candidates), after checking every id; :meth:`Service.run` ranks a list of
queries with **one** matrix product (the HTTP layer batches concurrent requests into such lists).
Raw ids are mapped to indices here, at the edge, and nowhere else.

Queries: a user's vector (``recommend``), an item's vector (``similar``: items whose final vectors
have the largest inner product with it), or the mean of a session's item vectors (``session``).

Writes (:meth:`Service.add_items`): items added or updated from their text and image are encoded
with the bundle's encoder and placed by its content head (:class:`~lmmrec.serving.content.Placer`),
outside any lock; then, under the write lock, the new :class:`ItemSet` (vectors, ids, the index
prepared again) is built, the write is journaled durably in the bundle folder
(:mod:`lmmrec.serving.journal`), and the new item set replaces the old one in one assignment.
Readers take the current item set once per query and once per batch, so they see every write
whole or not at all, and never wait for a write. An updated item's vector is its content vector:
what the model learned of its ID is dropped, as for a new item.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from lmmrec.errors import ConfigError, DataError
from lmmrec.serving.bundle import Bundle
from lmmrec.serving.content import Placer
from lmmrec.serving.errors import RequestError
from lmmrec.serving.index import ExactIndex, Index, build_index
from lmmrec.serving.journal import Journal, Update
from lmmrec.serving.schemas import (
    MAX_K,
    AddItemsRequest,
    AddItemsResult,
    Metadata,
    Ranking,
    RecommendRequest,
    ScoredItem,
    SessionRequest,
    SimilarRequest,
    WrittenItem,
)
from lmmrec.serving.writes import WriteLimits, decode_items

_SHOWN_UNKNOWN = 3  # unknown ids quoted in an error message


@dataclass(frozen=True)
class Query:
    """One ranking to compute.

    Attributes:
        vector: ``[D]`` float32 query vector.
        k: items wanted (already capped at the number of rankable items).
        exclude: ``[E]`` item indices never to return.
        candidates: ``[C]`` distinct item indices to rank among, or ``None`` for all items.
    """

    vector: torch.Tensor
    k: int
    exclude: np.ndarray
    candidates: np.ndarray | None = None


@dataclass(frozen=True)
class ItemSet:
    """The items a service ranks, never changed in place: a write builds a new one.

    Attributes:
        ids: ``[I]`` raw ids (row ``i`` = item ``i``).
        vecs: ``[I, D]`` float32 item vectors.
        index_of: raw id -> row.
        exact: the one ranker over ``vecs`` (requests with candidates).
        index: the index requests without candidates are ranked with (``exact`` or faiss).
    """

    ids: np.ndarray
    vecs: torch.Tensor
    index_of: dict[str, int]
    exact: ExactIndex
    index: Index

    @classmethod
    def build(cls, ids: np.ndarray, vecs: torch.Tensor, index: str, nprobe: int) -> ItemSet:
        exact = ExactIndex(vecs)
        chosen = exact if index == "exact" else build_index(index, vecs, nprobe)
        return cls(ids, vecs, {raw: i for i, raw in enumerate(ids.tolist())}, exact, chosen)

    @property
    def n(self) -> int:
        return len(self.ids)

    def with_rows(self, ids: list[str], vectors: torch.Tensor) -> ItemSet:
        """A new item set where ``ids`` have ``vectors`` ``[n, D]``: known ids replaced, new
        ones appended in order (``O(I D)``: the vectors are copied, the ranker prepared again)."""
        index_of = dict(self.index_of)
        rows = []
        for raw in ids:
            rows.append(index_of.setdefault(raw, len(index_of)))
        added = len(index_of) - self.n
        vecs = torch.cat([self.vecs, self.vecs.new_zeros(added, self.vecs.shape[1])])  # [I', D]
        vecs[torch.tensor(rows, dtype=torch.long)] = vectors.to(vecs.dtype)
        all_ids = np.concatenate([self.ids, np.asarray(ids, dtype=object)[len(ids) - added :]])
        changed = np.asarray(rows, dtype=np.int64)
        exact = ExactIndex(vecs)
        index = exact if self.index is self.exact else self.index.updated(vecs, changed)
        return ItemSet(all_ids, vecs, index_of, exact, index)


class Service:
    """Answers recommendation requests from a :class:`~lmmrec.serving.bundle.Bundle`, and
    adds or updates items from their content when the bundle can place them.

    Args:
        bundle: the vectors, ids and seen items to serve.
        index: ``"exact"`` (the one ranker) or ``"faiss"`` (approximate; see
            :mod:`lmmrec.serving.index`). Requests with candidates are always ranked exactly.
        nprobe: clusters the faiss index searches per query.
        path: the bundle's folder, where writes are journaled (``None``: no writes).
        limits: what a written item may hold.
    """

    def __init__(
        self,
        bundle: Bundle,
        index: str = "exact",
        nprobe: int = 16,
        path: str | Path | None = None,
        limits: WriteLimits | None = None,
    ) -> None:
        self.bundle = bundle
        self.user_vecs = torch.from_numpy(bundle.user_vecs)  # [U, D]
        self.items = ItemSet.build(
            bundle.item_ids, torch.from_numpy(bundle.item_vecs), index, nprobe
        )
        self._user_index = {raw: u for u, raw in enumerate(bundle.user_ids.tolist())}
        self._empty = np.empty(0, dtype=np.int64)
        self.limits = limits or WriteLimits()
        self.journal = None if path is None else Journal(Path(path))
        self._write_lock = threading.Lock()
        self._placer: Placer | None = None

    @classmethod
    def open(
        cls,
        path: str | Path,
        index: str = "exact",
        nprobe: int = 16,
        limits: WriteLimits | None = None,
    ) -> Service:
        """Serve the bundle folder at ``path`` (its journal of writes replayed); writes, when
        its model can place new items, are journaled there."""
        return cls(Bundle.load(path), index=index, nprobe=nprobe, path=path, limits=limits)

    @property
    def index(self) -> Index:
        """The index of the current item set."""
        return self.items.index

    @property
    def writable(self) -> bool:
        """Whether items can be added: a content part, and a folder to journal writes in."""
        return self.bundle.content is not None and self.journal is not None

    # ------------------------------------------------------------------ requests -> queries
    def query(self, request: RecommendRequest | SimilarRequest | SessionRequest) -> Query:
        """The :class:`Query` of a validated request; :class:`RequestError` for unknown ids."""
        items = self.items  # one item set for the whole query
        candidates = self._candidates(items, request.candidates)
        if isinstance(request, RecommendRequest):
            user = self._user_index.get(request.user)
            if user is None:
                raise RequestError(
                    "user",
                    f"unknown user {request.user!r}; use a raw user id of the training data, or "
                    "rank for an anonymous user's items with /session",
                    status=404,
                )
            seen = self.bundle.seen
            exclude = (
                seen.indices[seen.indptr[user] : seen.indptr[user + 1]].astype(np.int64)
                if request.exclude_seen
                else self._empty
            )
            return self._query(items, self.user_vecs[user], request.k, exclude, candidates)
        if isinstance(request, SimilarRequest):
            item = items.index_of.get(request.item)
            if item is None:
                raise RequestError(
                    "item", f"unknown item {request.item!r}; use a raw item id of the bundle", 404
                )
            exclude = np.array([item], dtype=np.int64)
            return self._query(items, items.vecs[item], request.k, exclude, candidates)
        rows = np.unique(self._items(items, request.items, "items"))
        vector = items.vecs[torch.from_numpy(rows)].mean(dim=0)  # [D]
        exclude = rows if request.exclude_session else self._empty
        return self._query(items, vector, request.k, exclude, candidates)

    def _query(
        self,
        items: ItemSet,
        vector: torch.Tensor,
        k: int,
        exclude: np.ndarray,
        candidates: np.ndarray | None,
    ) -> Query:
        rankable = items.n if candidates is None else len(candidates)
        return Query(vector=vector, k=min(k, rankable), exclude=exclude, candidates=candidates)

    def _candidates(self, items: ItemSet, raw: list[str] | None) -> np.ndarray | None:
        return None if raw is None else np.unique(self._items(items, raw, "candidates"))

    def _items(self, items: ItemSet, raw: Sequence[str], field: str) -> np.ndarray:
        """Item indices of raw ids; :class:`RequestError` naming up to 3 unknown ones."""
        lookup = items.index_of.get
        found = [lookup(r) for r in raw]
        if None in found:
            unknown = [r for r, i in zip(raw, found, strict=True) if i is None]
            shown = ", ".join(repr(r) for r in unknown[:_SHOWN_UNKNOWN])
            extra = len(unknown) - _SHOWN_UNKNOWN
            more = f" and {extra} more" if extra > 0 else ""
            raise RequestError(
                field, f"unknown item id(s) {shown}{more}; pass raw item ids of the bundle", 404
            )
        return np.asarray(found, dtype=np.int64)

    # ------------------------------------------------------------------ ranking
    def run(self, queries: Sequence[Query]) -> list[Ranking]:
        """Rank every query; those without candidates share one matrix product.

        Returns:
            one :class:`Ranking` per query, in order, each with at most ``query.k`` items.
        """
        items = self.items  # one item set for the whole batch: a write swaps in a new one
        answers: list[Ranking | None] = [None] * len(queries)
        plain = [i for i, q in enumerate(queries) if q.candidates is None]
        if plain:
            batch = [queries[i] for i in plain]
            vectors = torch.stack([q.vector for q in batch])  # [B, D]
            lengths = [len(q.exclude) for q in batch]
            exclude = sp.csr_matrix(
                (
                    np.ones(sum(lengths), dtype=np.float32),
                    np.concatenate([q.exclude for q in batch]),
                    np.concatenate([[0], np.cumsum(lengths)]),
                ),
                shape=(len(batch), items.n),
            )
            top = items.index.search(vectors, max(q.k for q in batch), exclude)
            for row, (i, q) in enumerate(zip(plain, batch, strict=True)):
                answers[i] = self._ranking(
                    items, top.items[row, : q.k], top.scores[row, : q.k], items.index.kind
                )
        for i, q in enumerate(queries):
            if q.candidates is not None:
                exclude = sp.csr_matrix(
                    (np.ones(len(q.exclude), dtype=np.float32), q.exclude, [0, len(q.exclude)]),
                    shape=(1, items.n),
                )
                top = items.exact.ranker.top_k(
                    q.vector[None], q.k, seen=exclude, candidates=q.candidates
                )
                answers[i] = self._ranking(items, top.items[0], top.scores[0], "exact")
        return [a for a in answers if a is not None]

    @staticmethod
    def _ranking(items: ItemSet, top: torch.Tensor, scores: torch.Tensor, kind: str) -> Ranking:
        """``[k]`` items and scores as raw ids, excluded items (``-inf``) dropped."""
        valid = torch.isfinite(scores)
        ids = items.ids[top[valid].numpy()].tolist()
        return Ranking.model_construct(
            items=[
                ScoredItem.model_construct(item=i, score=s)
                for i, s in zip(ids, scores[valid].tolist(), strict=True)
            ],
            index=kind,
        )

    # ------------------------------------------------------------------ one request each
    def recommend(self, request: RecommendRequest) -> Ranking:
        return self.run([self.query(request)])[0]

    def similar(self, request: SimilarRequest) -> Ranking:
        return self.run([self.query(request)])[0]

    def session(self, request: SessionRequest) -> Ranking:
        return self.run([self.query(request)])[0]

    def metadata(self) -> Metadata:
        manifest = self.bundle.manifest
        return Metadata(
            model=manifest.get("model"),
            dataset=manifest.get("dataset"),
            dataset_hash=manifest.get("dataset_hash"),
            n_users=self.bundle.n_users,
            n_items=self.items.n,
            dim=int(self.bundle.item_vecs.shape[1]),
            index=self.index.kind,
            max_k=MAX_K,
            writable=self.writable,
            metrics=manifest.get("metrics"),
            exported_at=manifest.get("exported_at"),
        )

    def close(self) -> None:
        """Release this service's hold on its bundle folder's writes (another process may then
        write to it); the service keeps answering, and takes the hold again on its next write."""
        if self.journal is not None:
            with self._write_lock:
                self.journal.close()

    # ------------------------------------------------------------------ writes
    def placer(self) -> Placer:
        """The bundle's encoder and content head, loaded on first use.

        Raises:
            RequestError: 409 when this service cannot place new items (an ID-only model, a
                bundle without an encoder, no folder to journal writes in); 503 when the
                bundle's encoder cannot be loaded here.
        """
        content = self.bundle.content
        if content is None:
            why = self.bundle.manifest.get("no_content") or "it holds no item encoder"
            raise RequestError(
                "items",
                f"this bundle cannot place new items ({why}); export a run of a content model "
                "(vbpr, freedom, bm3) whose features record their encoder",
                status=409,
            )
        if self.journal is None:
            raise RequestError(
                "items",
                "this service holds its bundle in memory, with no folder to keep writes in; open "
                "the bundle folder (Service.open, Client.open, lmmrec serve BUNDLE)",
                status=409,
            )
        with self._write_lock:
            if self._placer is None:
                try:
                    self._placer = Placer(content)
                except ConfigError as error:
                    raise RequestError(
                        "items",
                        f"the bundle's encoder cannot be loaded here ({error}); install its base "
                        "weights or export the bundle again",
                        status=503,
                    ) from None
        return self._placer

    def add_items(self, request: AddItemsRequest) -> AddItemsResult:
        """Add or update items from their content; they are rankable, and durable, on return.

        Raises:
            RequestError: bad content (:func:`~lmmrec.serving.writes.decode_items`), or a
                service that cannot place new items (:meth:`placer`).
        """
        placer = self.placer()
        decoded = decode_items(request, self.limits, placer.inputs)
        vectors = placer.vectors(decoded.texts, decoded.images)  # [n, D], outside the lock
        update = Update(decoded.ids, vectors.numpy(), decoded.texts, decoded.image_refs)
        with self._write_lock:
            current = self.items
            written = [
                WrittenItem(item=raw, status="updated" if raw in current.index_of else "added")
                for raw in decoded.ids
            ]
            changed = current.with_rows(decoded.ids, vectors)
            try:
                self.journal.append(update)  # type: ignore[union-attr]  # durable before visible
            except DataError as error:  # another process writes to this bundle
                raise RequestError("items", str(error), status=409) from None
            self.items = changed
        return AddItemsResult(items=written, n_items=changed.n)

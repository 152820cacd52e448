"""The service without HTTP: requests with raw ids in, rankings with raw ids out.

:class:`Service` turns each request into a :class:`Query` (a query vector ``[D]``, the items it
must not return, optional candidates), after checking every id; :meth:`Service.run` ranks a list of
queries with **one** matrix product (the HTTP layer batches concurrent requests into such lists).
Raw ids are mapped to indices here, at the edge, and nowhere else.

Queries: a user's vector (``recommend``), an item's vector (``similar``: items whose final vectors
have the largest inner product with it), or the mean of a session's item vectors (``session``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from lmmrec.errors import DataError
from lmmrec.serving.bundle import Bundle
from lmmrec.serving.index import ExactIndex, Index, build_index
from lmmrec.serving.schemas import (
    MAX_K,
    Metadata,
    Ranking,
    RecommendRequest,
    ScoredItem,
    SessionRequest,
    SimilarRequest,
)

_SHOWN_UNKNOWN = 3  # unknown ids quoted in an error message


class RequestError(DataError):
    """A request the service cannot answer: names the field, the problem and the fix.

    ``status`` is the HTTP status the API answers with (404: an id is not in the bundle, 422: any
    other bad value).
    """

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status


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


class Service:
    """Answers recommendation requests from a :class:`~lmmrec.serving.bundle.Bundle`.

    Args:
        bundle: the vectors, ids and seen items to serve.
        index: ``"exact"`` (the one ranker) or ``"faiss"`` (approximate; see
            :mod:`lmmrec.serving.index`). Requests with candidates are always ranked exactly.
        nprobe: clusters the faiss index searches per query.
    """

    def __init__(self, bundle: Bundle, index: str = "exact", nprobe: int = 16) -> None:
        self.bundle = bundle
        self.user_vecs = torch.from_numpy(bundle.user_vecs)  # [U, D]
        self.item_vecs = torch.from_numpy(bundle.item_vecs)  # [I, D]
        self.exact = ExactIndex(self.item_vecs)
        self.index: Index = (
            self.exact if index == "exact" else build_index(index, self.item_vecs, nprobe)
        )
        self._user_index = {raw: u for u, raw in enumerate(bundle.user_ids.tolist())}
        self._item_index = {raw: i for i, raw in enumerate(bundle.item_ids.tolist())}
        self._empty = np.empty(0, dtype=np.int64)

    @classmethod
    def open(cls, path: str | Path, index: str = "exact", nprobe: int = 16) -> Service:
        """Serve the bundle folder at ``path``."""
        return cls(Bundle.load(path), index=index, nprobe=nprobe)

    # ------------------------------------------------------------------ requests -> queries
    def query(self, request: RecommendRequest | SimilarRequest | SessionRequest) -> Query:
        """The :class:`Query` of a validated request; :class:`RequestError` for unknown ids."""
        candidates = self._candidates(request.candidates)
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
            return self._query(self.user_vecs[user], request.k, exclude, candidates)
        if isinstance(request, SimilarRequest):
            item = self._item_index.get(request.item)
            if item is None:
                raise RequestError(
                    "item", f"unknown item {request.item!r}; use a raw item id of the bundle", 404
                )
            exclude = np.array([item], dtype=np.int64)
            return self._query(self.item_vecs[item], request.k, exclude, candidates)
        items = np.unique(self._items(request.items, "items"))
        vector = self.item_vecs[torch.from_numpy(items)].mean(dim=0)  # [D]
        exclude = items if request.exclude_session else self._empty
        return self._query(vector, request.k, exclude, candidates)

    def _query(
        self, vector: torch.Tensor, k: int, exclude: np.ndarray, candidates: np.ndarray | None
    ) -> Query:
        rankable = self.bundle.n_items if candidates is None else len(candidates)
        return Query(vector=vector, k=min(k, rankable), exclude=exclude, candidates=candidates)

    def _candidates(self, raw: list[str] | None) -> np.ndarray | None:
        return None if raw is None else np.unique(self._items(raw, "candidates"))

    def _items(self, raw: Sequence[str], field: str) -> np.ndarray:
        """Item indices of raw ids; :class:`RequestError` naming up to 3 unknown ones."""
        lookup = self._item_index.get
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
                shape=(len(batch), self.bundle.n_items),
            )
            top = self.index.search(vectors, max(q.k for q in batch), exclude)
            for row, (i, q) in enumerate(zip(plain, batch, strict=True)):
                answers[i] = self._ranking(top.items[row, : q.k], top.scores[row, : q.k])
        for i, q in enumerate(queries):
            if q.candidates is not None:
                exclude = sp.csr_matrix(
                    (np.ones(len(q.exclude), dtype=np.float32), q.exclude, [0, len(q.exclude)]),
                    shape=(1, self.bundle.n_items),
                )
                top = self.exact.ranker.top_k(
                    q.vector[None], q.k, seen=exclude, candidates=q.candidates
                )
                answers[i] = self._ranking(top.items[0], top.scores[0], kind="exact")
        return [a for a in answers if a is not None]

    def _ranking(self, items: torch.Tensor, scores: torch.Tensor, kind: str = "") -> Ranking:
        """``[k]`` items and scores as raw ids, excluded items (``-inf``) dropped."""
        valid = torch.isfinite(scores)
        ids = self.bundle.item_ids[items[valid].numpy()].tolist()
        return Ranking.model_construct(
            items=[
                ScoredItem.model_construct(item=i, score=s)
                for i, s in zip(ids, scores[valid].tolist(), strict=True)
            ],
            index=kind or self.index.kind,
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
            n_items=self.bundle.n_items,
            dim=int(self.bundle.item_vecs.shape[1]),
            index=self.index.kind,
            max_k=MAX_K,
            metrics=manifest.get("metrics"),
            exported_at=manifest.get("exported_at"),
        )

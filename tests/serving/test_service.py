"""The service without HTTP: rankings equal the one ranker's, ids are checked at the edge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from serving_fixtures import exact_vectors

from lmmrec.serving.bundle import Bundle
from lmmrec.serving.client import Client
from lmmrec.serving.schemas import RecommendRequest, SessionRequest, SimilarRequest
from lmmrec.serving.service import RequestError, Service


def _expected(bundle: Bundle, query: np.ndarray, k: int, exclude: set[int]) -> list[str]:
    """Brute force: sort every item by score (stable: ties to the lower item), drop excluded."""
    scores = bundle.item_vecs @ query
    order = [i for i in np.argsort(-scores, kind="stable") if i not in exclude]
    return [bundle.item_ids[i] for i in order[:k]]


def test_recommend_matches_brute_force(bundle: Bundle) -> None:
    service = Service(bundle)
    for user in (0, 7, 59):
        got = service.recommend(RecommendRequest(user=f"u{user}", k=10))
        seen = set(bundle.seen[user].indices.tolist())
        assert [s.item for s in got.items] == _expected(bundle, bundle.user_vecs[user], 10, seen)
        scores = [s.score for s in got.items]
        assert scores == sorted(scores, reverse=True)
        assert got.index == "exact"
    with_seen = service.recommend(RecommendRequest(user="u3", k=40, exclude_seen=False))
    assert len(with_seen.items) == 40  # every item


def test_seen_items_are_left_out_and_k_is_capped(bundle: Bundle) -> None:
    service = Service(bundle)
    got = service.recommend(RecommendRequest(user="u5", k=1000))
    n_seen = len(bundle.seen[5].indices)
    assert len(got.items) == bundle.n_items - n_seen
    assert not {s.item for s in got.items} & {f"i{i}" for i in bundle.seen[5].indices}


def test_candidates_restrict_the_ranking(bundle: Bundle) -> None:
    service = Service(bundle)
    candidates = ["i3", "i9", "i12", "i30", "i31", "i9"]
    got = service.recommend(RecommendRequest(user="u2", k=3, candidates=candidates))
    seen = set(bundle.seen[2].indices.tolist())
    allowed = {3, 9, 12, 30, 31} - seen
    scores = bundle.item_vecs @ bundle.user_vecs[2]
    ranked = sorted(allowed, key=lambda i: (-scores[i], i))
    assert [s.item for s in got.items] == [f"i{i}" for i in ranked[:3]]
    assert got.index == "exact"


def test_similar_items_and_sessions(bundle: Bundle) -> None:
    service = Service(bundle)
    got = service.similar(SimilarRequest(item="i4", k=5))
    assert [s.item for s in got.items] == _expected(bundle, bundle.item_vecs[4], 5, {4})
    session = service.session(SessionRequest(items=["i1", "i2", "i2"], k=6))
    query = bundle.item_vecs[[1, 2]].mean(axis=0)
    expected = _expected(bundle, query, 6, {1, 2})
    assert [s.item for s in session.items] == expected
    keep = service.session(SessionRequest(items=["i1"], k=40, exclude_session=False))
    assert "i1" in {s.item for s in keep.items}


def test_unknown_ids_name_the_field(bundle: Bundle) -> None:
    service = Service(bundle)
    with pytest.raises(RequestError, match=r"user: unknown user 'nobody'.*/session") as caught:
        service.query(RecommendRequest(user="nobody"))
    assert caught.value.status == 404
    with pytest.raises(RequestError, match="item: unknown item 'x'"):
        service.query(SimilarRequest(item="x"))
    with pytest.raises(RequestError, match=r"candidates: unknown item id\(s\) 'a', 'b', 'c' and 1"):
        service.query(RecommendRequest(user="u1", candidates=["i1", "a", "b", "c", "d"]))
    with pytest.raises(RequestError, match="items: unknown"):
        service.query(SessionRequest(items=["zzz"]))


def test_a_batch_equals_its_requests_one_by_one(bundle: Bundle) -> None:
    service = Service(bundle)
    requests = [
        RecommendRequest(user="u1", k=5),
        SimilarRequest(item="i7", k=12),
        RecommendRequest(user="u9", k=3, candidates=["i1", "i2", "i3", "i4"]),
        SessionRequest(items=["i0", "i39"], k=40),
        RecommendRequest(user="u1", k=20, exclude_seen=False),
    ]
    batched = service.run([service.query(r) for r in requests])
    single = [service.run([service.query(r)])[0] for r in requests]
    assert batched == single


def test_faiss_index_recalls_the_exact_ranking(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    n_users, n_items = 50, 4000
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16))
    items = centres[rng.integers(0, 20, n_items)] + 0.3 * rng.normal(size=(n_items, 16))
    bundle = Bundle(
        user_vecs=exact_vectors(n_users, 16, seed=3),
        item_vecs=items.astype(np.float32),
        user_ids=[f"u{u}" for u in range(n_users)],
        item_ids=[f"i{i}" for i in range(n_items)],
        seen=np.eye(n_users, n_items),
        texts=[""] * n_items,
        images=[None] * n_items,
    )
    exact, approximate = Service(bundle), Service(bundle, index="faiss", nprobe=64)
    all_probes = Service(bundle, index="faiss", nprobe=10_000)
    hits = 0
    for user in range(n_users):
        request = RecommendRequest(user=f"u{user}", k=20)
        truth = [s.item for s in exact.recommend(request).items]
        found = approximate.recommend(request)
        assert found.index == "faiss"
        assert f"i{user}" not in {s.item for s in found.items}  # seen, excluded
        hits += len(set(truth) & {s.item for s in found.items})
        assert [s.item for s in all_probes.recommend(request).items] == truth
    assert hits / (20 * n_users) > 0.9


def test_in_process_client(bundle_dir: Path, bundle: Bundle) -> None:
    client = Client.open(bundle_dir)
    got = client.recommend("u0", k=4)
    assert got == Service(bundle).recommend(RecommendRequest(user="u0", k=4))
    assert client.metadata().n_items == 40
    with pytest.raises(RequestError, match=r"k: .*less than or equal to 1000.*1\.\.1000"):
        client.recommend("u0", k=5000)
    assert torch.equal(
        torch.tensor([s.score for s in got.items]).argsort(descending=True), torch.arange(4)
    )

"""Adding and updating items from their content: the bundle's encoder and content head place
them, they are rankable at once, journaled durably, and refused with a 4xx when bad."""

from __future__ import annotations

import base64
import io
import json
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from content_fixtures import COLOURS, ENCODER, png_bytes
from PIL import Image

from lmmrec.encoders import ItemBatch, build
from lmmrec.errors import ConfigError
from lmmrec.serving.background import BackgroundServer
from lmmrec.serving.bundle import Bundle
from lmmrec.serving.client import Client, item_content
from lmmrec.serving.content import CONTENT, HEAD
from lmmrec.serving.content import ENCODER as ENCODER_DIR
from lmmrec.serving.journal import UPDATES
from lmmrec.serving.schemas import AddItemsRequest, ItemContent
from lmmrec.serving.service import RequestError, Service
from lmmrec.serving.writes import WriteLimits
from lmmrec.training.run import load_run

pytest.importorskip("fastapi")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _head(run_dir: Path) -> torch.nn.Module:
    """The head a bundle places new items by (``placement="map"``): the run's ridge map."""
    _, _, trainer = load_run(run_dir)
    return trainer.content_map().head


def _expected(run_dir: Path, text: str, image: bytes | None) -> torch.Tensor:
    """``[D]``: the map's vector of the item encoded by a fresh ``servingtiny``."""
    encoder = build(ENCODER)
    pil = None if image is None else Image.open(io.BytesIO(image)).convert("RGB")
    with torch.no_grad():
        feats = encoder(encoder.preprocess(ItemBatch(texts=[text], images=[pil])))
    if image is None:
        feats["image"] = torch.zeros_like(feats["image"])  # the feature set's zeros policy
    with torch.no_grad():
        return _head(run_dir)(feats)[0]


def test_the_bundle_carries_the_encoder_and_the_content_head(content_run, tmp_path: Path) -> None:
    run_dir, bundle_dir = content_run
    manifest = json.loads((bundle_dir / "bundle.json").read_text())
    content = manifest["content"]
    assert content["encoder"]["spec"] == ENCODER and content["fill"] == "zeros"
    assert content["dims"] == {"image": 5, "text": 6}
    assert (bundle_dir / CONTENT / HEAD).is_file()
    assert (bundle_dir / CONTENT / ENCODER_DIR / "encoder.json").is_file()
    from safetensors.numpy import load_file

    head = load_file(str(bundle_dir / CONTENT / HEAD))  # plain tensors only
    assert set(head) == {"weight.image", "weight.text", "bias", "fill.image", "fill.text"}
    # by default the run's ridge map, its penalty recorded
    mapped = load_run(run_dir)[2].content_map()
    assert content["placement"] == "map" and content["ridge"] == mapped.ridge
    assert content["selected_by"] == mapped.selected_by
    for name, tensor in mapped.head.tensors().items():
        np.testing.assert_array_equal(head[name], tensor.numpy())
    # or VBPR's own content part: [0, W f + b], the ID rows zero
    from lmmrec.serving.bundle import export_bundle

    own = export_bundle(run_dir, tmp_path / "own", placement="model")
    head = load_file(str(own / CONTENT / HEAD))
    assert head["weight.image"].shape == (16, 5)  # [2D, d_image]
    assert not head["weight.image"][:8].any() and head["weight.image"][8:].any()
    assert json.loads((own / "bundle.json").read_text())["content"]["placement"] == "model"
    with pytest.raises(ConfigError, match="placement 'nearest' is unknown; use one of map, model"):
        export_bundle(run_dir, tmp_path / "bad", placement="nearest")


def test_an_added_item_is_placed_by_its_content_and_rankable(
    content_run, writable_dir: Path
) -> None:
    run_dir, _ = content_run
    client = Client.open(writable_dir)
    image = png_bytes(COLOURS[2], seed=99)
    result = client.add_item("new-blue", text="blue soft toy", image=image)
    assert [(w.item, w.status) for w in result.items] == [("new-blue", "added")]
    assert result.n_items == 41 and client.metadata().n_items == 41
    service = client._service
    vector = service.items.vecs[service.items.index_of["new-blue"]]
    torch.testing.assert_close(vector, _expected(run_dir, "blue soft toy", image))
    user_vec = service.user_vecs[0]
    ranking = client.recommend("0", k=1, candidates=["new-blue"])
    assert ranking.items[0].item == "new-blue"
    assert ranking.items[0].score == pytest.approx(float(user_vec @ vector), rel=1e-5)
    assert "new-blue" not in [s.item for s in client.similar("new-blue", k=40).items]
    assert len(client.similar("new-blue", k=40).items) == 40  # ranked against the catalogue
    assert client.session(["new-blue", "3"], k=5).items


def test_a_catalogue_item_re_encoded_as_new_gets_its_content_vector(
    content_run, writable_dir: Path
) -> None:
    run_dir, _ = content_run
    bundle = Bundle.load(writable_dir)
    head = _head(run_dir)
    _, dataset, _ = load_run(run_dir)
    stored = dataset.feature_set("tiny").to_tensors()
    client = Client.open(writable_dir)
    items = [1, 5, 6]  # both modalities; no image; no text
    request = []
    for item in items:
        path = dataset.catalog.image_path(item)
        request.append(
            item_content(
                f"again-{item}",
                text=bundle.texts[item] or None,
                image=None if path is None else Path(path).read_bytes(),
            )
        )
    client.add_items(request)
    service = client._service
    got = service.items.vecs[[service.items.index_of[f"again-{i}"] for i in items]]
    with torch.no_grad():
        want = head({m: t[items] for m, t in stored.items()})
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_updating_an_item_replaces_its_vector_and_keeps_its_row(
    content_run, writable_dir: Path
) -> None:
    run_dir, _ = content_run
    client = Client.open(writable_dir)
    before = client._service.items.vecs[3].clone()
    result = client.add_item("3", text="green bright shirt")
    assert [(w.item, w.status) for w in result.items] == [("3", "updated")]
    assert result.n_items == 40
    service = client._service
    assert service.items.index_of["3"] == 3
    after = service.items.vecs[3]
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, _expected(run_dir, "green bright shirt", None))
    assert Bundle.load(writable_dir).texts[3] == "green bright shirt"


def test_writes_need_the_token_when_there_is_one(writable_dir: Path) -> None:
    from lmmrec.serving.api import create_app

    server = BackgroundServer(create_app(Service.open(writable_dir), token="s3cret"))
    body = {"items": [{"item": "t1", "text": "red mug"}]}
    try:
        with httpx.Client(base_url=server.url) as http:
            missing = http.post("/items", json=body)
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == "Bearer"
            assert missing.json()["field"] == "authorization"
            assert "Authorization: Bearer" in missing.json()["detail"]
            wrong = http.post("/items", json=body, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 403 and "wrong token" in wrong.json()["detail"]
            assert http.post("/recommend", json={"user": "0", "k": 2}).status_code == 200
        with pytest.raises(RequestError) as caught, Client.connect(server.url) as anonymous:
            anonymous.add_item("t1", text="red mug")
        assert caught.value.status == 401
        with Client.connect(server.url, token="s3cret") as writer:
            assert writer.add_item("t1", text="red mug").items[0].status == "added"
            assert writer.recommend("0", k=1, candidates=["t1"]).items[0].item == "t1"
    finally:
        server.stop()


def test_writes_survive_a_restart_of_a_real_server(content_run, writable_dir: Path) -> None:
    from lmmrec.serving.api import create_app

    image = png_bytes(COLOURS[0], seed=7)
    server = BackgroundServer(create_app(Service.open(writable_dir)))
    try:
        with Client.connect(server.url) as client:
            client.add_items(
                [
                    item_content("r1", text="red toy", image=image),
                    item_content("r2", text="yellow mug"),
                ]
            )
            client.add_item("r1", text="red bright toy", image=image)  # an update of a new item
            before = client.recommend("4", k=3, candidates=["r1", "r2", "0"])
    finally:
        server.stop()
    assert len(list((writable_dir / UPDATES).glob("*.safetensors"))) == 2
    server = BackgroundServer(create_app(Service.open(writable_dir)))
    try:
        with Client.connect(server.url) as client:
            assert client.metadata().n_items == 42
            assert client.recommend("4", k=3, candidates=["r1", "r2", "0"]) == before
    finally:
        server.stop()
    run_dir, _ = content_run
    service = Service.open(writable_dir)
    torch.testing.assert_close(
        service.items.vecs[service.items.index_of["r1"]],
        _expected(run_dir, "red bright toy", image),
    )
    # saving the bundle again folds the journal into its arrays
    folded = Bundle.load(writable_dir).save(writable_dir)
    assert not (folded / UPDATES).exists()
    assert Bundle.load(folded).n_items == 42


def test_an_interrupted_write_leaves_no_trace(writable_dir: Path) -> None:
    client = Client.open(writable_dir)
    client.add_item("kept", text="red mug")
    client.close()  # as a stopped server does: another process may write now
    (writable_dir / UPDATES / ".000000000002.safetensors.tmp").write_bytes(b"half a write")
    reopened = Client.open(writable_dir)
    assert reopened.metadata().n_items == 41
    assert not list((writable_dir / UPDATES).glob(".*.tmp"))
    assert reopened.add_item("next", text="blue mug").n_items == 42


def test_one_process_at_a_time_writes_to_a_bundle(writable_dir: Path) -> None:
    first = Client.open(writable_dir)
    first.add_item("a", text="red mug")
    second = Client.open(writable_dir)  # e.g. a second server on the same folder
    with pytest.raises(RequestError, match="another process is writing") as refused:
        second.add_item("b", text="blue mug")
    assert refused.value.status == 409
    first.add_item("c", text="green mug")  # the first writer goes on
    first.close()
    assert second.add_item("b", text="blue mug").n_items == 42  # its view: a and b
    names = sorted(p.name for p in (writable_dir / UPDATES).glob("*.safetensors"))
    assert names == [f"{n:012d}.safetensors" for n in (1, 2, 3)]  # nothing written over
    assert Client.open(writable_dir).metadata().n_items == 43  # a, b, c


def _png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_WRITES = [
    ({"item": "x", "image": "not base64!"}, 422, "items.0.image", "not valid base64"),
    ({"item": "x", "image": _b64(b"plain text, no image")}, 422, "items.0.image", "Pillow"),
    (
        {"item": "x", "image": _b64(png_bytes(COLOURS[0], 1))},
        413,
        "items.0.image",
        "--max-image-bytes",
    ),
    ({"item": "x", "image": _b64(_png((80, 2)))}, 422, "items.0.image", "over the limit of 100"),
    ({"item": "x", "text": "red " * 30}, 422, "items.0.text", "over the limit of 100"),
    ({"item": "x", "audio": "AAAA"}, 422, "items.0.audio", "unknown field; remove it"),
    ({"item": "x", "text": "  "}, 422, "items.0", "no content; give it a non-empty image"),
    ({"item": "", "text": "red"}, 422, "items.0.item", "at least 1 character"),
    ({"text": "red"}, 422, "items.0.item", "required; add it (raw item id"),
]


@pytest.mark.parametrize(("item", "status", "field", "words"), BAD_WRITES)
def test_bad_items_are_refused_naming_the_field(
    writable_dir: Path, item: dict, status: int, field: str, words: str
) -> None:
    from lmmrec.serving.api import create_app

    limits = WriteLimits(max_image_bytes=200, max_text_chars=100, max_image_pixels=100)
    server = BackgroundServer(create_app(Service.open(writable_dir, limits=limits)))
    try:
        response = httpx.post(server.url + "/items", json={"items": [item]})
    finally:
        server.stop()
    assert response.status_code == status
    error = response.json()
    assert (error["field"], error["detail"].startswith(f"{field}: ")) == (field, True)
    assert words in error["detail"]
    assert not (writable_dir / UPDATES).exists()  # nothing was written


def test_duplicate_ids_and_oversized_bodies_are_refused(writable_server: BackgroundServer) -> None:
    twice = {"items": [{"item": "d", "text": "red"}, {"item": "d", "text": "blue"}]}
    response = httpx.post(writable_server.url + "/items", json=twice)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("items.1.item: 'd' is also item 0")
    huge = httpx.post(
        writable_server.url + "/items",
        content=b"{" + b" " * (64 * 1024 * 1024) + b"}",
        headers={"content-type": "application/json"},
    )
    assert huge.status_code == 413 and huge.json()["field"] == "body"


def test_a_bundle_that_cannot_place_items_says_so(live_server: BackgroundServer, bundle) -> None:
    response = httpx.post(live_server.url + "/items", json={"items": [{"item": "n", "text": "a"}]})
    assert response.status_code == 409
    assert response.json()["detail"].startswith("items: this bundle cannot place new items")
    with pytest.raises(RequestError, match=r"cannot place new items") as caught:
        Service(bundle).add_items(AddItemsRequest(items=[ItemContent(item="n", text="a")]))
    assert caught.value.status == 409
    assert httpx.get(live_server.url + "/metadata").json()["writable"] is False


def test_readers_never_see_a_half_applied_write(writable_server: BackgroundServer) -> None:
    """One writer adds batches of 4 items while readers rank among a batch's ids: each answer
    knows all 4 of them (200) or none (404 naming them all), and ranks them by the vectors
    acknowledged for them."""
    batches = [[f"b{b}-{j}" for j in range(4)] for b in range(12)]
    failures: list[str] = []
    seen: list[dict[str, float]] = []
    done = threading.Event()

    def write() -> None:
        with Client.connect(writable_server.url) as client:
            for b, ids in enumerate(batches):
                words = ["red", "green", "blue", "yellow"]
                client.add_items(
                    [item_content(i, text=f"{words[j]} toy {b}") for j, i in enumerate(ids)]
                )
        done.set()

    def read(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(base_url=writable_server.url) as http:
            while not done.is_set() or rng.random() < 0.3:
                ids = batches[int(rng.integers(len(batches)))]
                response = http.post("/recommend", json={"user": "2", "k": 4, "candidates": ids})
                body = response.json()
                if response.status_code == 200:
                    if sorted(s["item"] for s in body["items"]) != sorted(ids):
                        failures.append(f"partial ranking {body}")
                    seen.append({s["item"]: s["score"] for s in body["items"]})
                elif response.status_code != 404 or "and 1 more" not in body["detail"]:
                    failures.append(f"{response.status_code} {body}")
                meta = http.get("/metadata").json()
                if (meta["n_items"] - 40) % 4:
                    failures.append(f"metadata with {meta['n_items']} items")

    threads = [threading.Thread(target=write)]
    threads += [threading.Thread(target=read, args=(s,)) for s in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures[:3]
    assert len(seen) > 3
    with Client.connect(writable_server.url) as client:
        final = {}
        for ids in batches:
            final |= {s.item: s.score for s in client.recommend("2", k=4, candidates=ids).items}
    assert all(final[item] == score for answer in seen for item, score in answer.items())


def test_an_end_to_end_bundle_places_items_with_its_trained_encoder(tmp_path: Path) -> None:
    from content_fixtures import content_dataset

    from lmmrec.serving.bundle import export_bundle
    from lmmrec.training import RunConfig, TrainConfig, train

    dataset = content_dataset(tmp_path / "data")
    config = RunConfig(
        dataset=str(tmp_path / "data"),
        model="freedom",
        paradigm="end2end",
        encoder={"spec": ENCODER, "strategy": "projection", "lr": 1e-2},
        output_dir=str(tmp_path / "runs"),
        name="e2e",
        model_params={"embedding_size": 8},
        train=TrainConfig(epochs=2, batch_size=64, ks=[5]),
    )
    run_dir = train(config, dataset=dataset).run_dir
    bundle_dir = export_bundle(run_dir, tmp_path / "bundle")
    assert Bundle.load(bundle_dir).manifest["content"]["encoder"]["strategy"] == "projection"
    client = Client.open(bundle_dir)
    client.add_item("n", text="red toy mug")
    _, _, trainer = load_run(run_dir)
    trained = trainer.step_module.encoding.encoder  # its heads, from the best checkpoint
    fresh = build(ENCODER)
    assert not torch.equal(trained.text_head.weight, fresh.text_head.weight)
    with torch.no_grad():
        feats = trained(trained.preprocess(ItemBatch(texts=["red toy mug"], images=[None])))
    feats["image"] = torch.zeros_like(feats["image"])  # end to end: absent inputs are zeros
    with torch.no_grad():  # the map, fitted on the trained encoder's features
        want = trainer.content_map().head(feats)[0]
    service = client._service
    torch.testing.assert_close(service.items.vecs[service.items.index_of["n"]], want)


def test_the_faiss_index_takes_written_items(writable_dir: Path) -> None:
    pytest.importorskip("faiss")
    from lmmrec.serving.schemas import RecommendRequest

    exact = Client.open(writable_dir)
    approximate = Client.open(writable_dir, index="faiss")
    for client in (exact, approximate):  # one writer at a time
        client.add_items([item_content("f1", text="red toy"), item_content("3", text="blue mug")])
        client.close()
    request = RecommendRequest(user="5", k=41, exclude_seen=False)
    want = exact._service.recommend(request)
    got = approximate._service.recommend(request)  # one cluster: every item is searched
    assert got.index == "faiss" and len(got.items) == 41
    assert [s.item for s in got.items] == [s.item for s in want.items]
    assert [s.score for s in got.items] == pytest.approx([s.score for s in want.items], rel=1e-5)


def test_the_token_file_must_hold_a_token(tmp_path: Path) -> None:
    from lmmrec.errors import ConfigError
    from lmmrec.serving.api import read_token

    (tmp_path / "token").write_text("  s3cret\n")
    assert read_token(tmp_path / "token") == "s3cret"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=r"--token-file .*empty; write the token into it"):
        read_token(tmp_path / "empty")
    with pytest.raises(ConfigError, match="cannot read it"):
        read_token(tmp_path / "missing")


@pytest.mark.parametrize(
    ("host", "token", "writable", "warns"),
    [
        ("0.0.0.0", None, True, True),
        ("0.0.0.0", "s3cret", True, False),
        ("127.0.0.1", None, True, False),
        ("0.0.0.0", None, False, False),  # an ID-only bundle takes no writes
    ],
)
def test_serving_writes_beyond_loopback_without_a_token_warns(
    host: str, token: str | None, writable: bool, warns: bool
) -> None:
    import warnings

    from lmmrec.serving.api import warn_open_writes

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert warn_open_writes(host, token, writable) is warns
    assert [str(w.message) for w in caught] == (
        [
            f"writes (POST /items) are open to anyone who can reach {host}: set a token with "
            "--token-file or $LMMREC_SERVE_TOKEN, or serve on 127.0.0.1"
        ]
        if warns
        else []
    )


def test_export_places_the_catalogues_cold_items_by_the_head(tmp_path: Path) -> None:
    """Items without training interactions get their content vectors in the bundle (their
    learned ones were trained only as negatives); the warm items keep what the model learned."""
    from content_fixtures import content_dataset, train_frozen

    from lmmrec.data.dataset import Dataset
    from lmmrec.data.splits import TEST
    from lmmrec.encoders import extract_features
    from lmmrec.serving.bundle import export_bundle
    from planted import with_cold_items

    with_cold_items(content_dataset(tmp_path / "data"), [0, 5, 10], to=TEST).save(tmp_path / "data")
    dataset = Dataset.load(tmp_path / "data")
    assert dataset.cold_items().nonzero()[0].tolist() == [0, 5, 10]
    extract_features(dataset, build(ENCODER), name="tiny", num_workers=0, progress=False)
    run_dir = train_frozen(dataset, tmp_path, "tiny")
    bundle = Bundle.load(export_bundle(run_dir, tmp_path / "bundle"))
    assert bundle.manifest["cold_items"] == {"count": 3, "placed_by_content": 3}
    _, _, trainer = load_run(run_dir)
    _, learned = trainer.embed()
    stored = {m: t[[0, 5, 10]] for m, t in dataset.feature_set("tiny").to_tensors().items()}
    with torch.no_grad():
        placed = bundle.content.head(stored)  # type: ignore[union-attr]
    vectors = torch.from_numpy(bundle.item_vecs)
    torch.testing.assert_close(vectors[[0, 5, 10]], placed)
    warm = torch.ones(40, dtype=torch.bool)
    warm[[0, 5, 10]] = False
    assert torch.equal(vectors[warm], learned[warm])
    kept = Bundle.load(export_bundle(run_dir, tmp_path / "kept", place_cold=False))
    assert kept.manifest["cold_items"] == {"count": 3, "placed_by_content": 0}
    assert torch.equal(torch.from_numpy(kept.item_vecs), learned)

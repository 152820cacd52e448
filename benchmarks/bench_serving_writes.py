"""New-item ingestion through the service against the encoder's own throughput, same items.

A bundle whose content part is the packaged ``dual:default`` encoder (EfficientNet-Lite0 +
MiniLM with their 256-d heads, offline) and a seeded random content head is written to a temporary
folder (synthetic user and item vectors: ``--users`` x ``--items``, ``--dim`` wide). The items to
ingest are the demo shop's first ``--n`` items (their text and their JPEG file's bytes). Two
measurements alternate for ``--rounds`` rounds:

* **encoder**: what the encoder alone needs from the same bytes: decode each JPEG (Pillow),
  preprocess, and run the encoder under ``inference_mode``, in batches of ``--batch``;
* **service**: :meth:`Service.add_items` with the same items as requests of ``--batch`` items
  (base64 images, encoded beforehand, as a client would send them): checking and decoding,
  encoding, the content head, the durable journal write (fsync) and the swap of the item set
  with its ranker prepared again. Each round writes new ids, so the catalogue grows.
* **HTTP**: the same requests as ``POST /items`` JSON bodies to the same service behind the API,
  served by uvicorn from a background thread of this process on 127.0.0.1
  (:class:`~lmmrec.serving.background.BackgroundServer`): adds the JSON parsing and validation of
  the base64 bodies, and the client's sending, on the same cores.

All run in this process with ``--threads`` torch/BLAS threads (the server's default is 1). The
ratios service/encoder and HTTP/encoder are reported per round and as medians (the issue's goal:
>= 85%).

Usage:
    python benchmarks/bench_serving_writes.py [--n 96] [--batch 32] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import scipy.sparse as sp
import torch
from PIL import Image
from threadpoolctl import threadpool_limits

from lmmrec.data.loading import load_dataset
from lmmrec.encoders import ItemBatch, build
from lmmrec.models.content_head import ContentHead
from lmmrec.serving.api import create_app
from lmmrec.serving.background import BackgroundServer
from lmmrec.serving.bundle import Bundle
from lmmrec.serving.content import ContentPart
from lmmrec.serving.schemas import AddItemsRequest, ItemContent
from lmmrec.serving.service import Service


def content_bundle(n_users: int, n_items: int, dim: int, encoder_dims: dict[str, int]) -> Bundle:
    """Seeded synthetic vectors with a random content head over the encoder's outputs."""
    rng = np.random.default_rng(0)
    generator = torch.Generator().manual_seed(0)
    head = ContentHead(
        {m: torch.randn(dim, d, generator=generator) / d**0.5 for m, d in encoder_dims.items()},
        torch.zeros(dim),
    )
    return Bundle(
        user_vecs=rng.standard_normal((n_users, dim), dtype=np.float32),
        item_vecs=rng.standard_normal((n_items, dim), dtype=np.float32),
        user_ids=[f"u{u}" for u in range(n_users)],
        item_ids=[f"i{i}" for i in range(n_items)],
        seen=sp.random(n_users, n_items, density=5 / n_items, format="csr", random_state=0),
        texts=[""] * n_items,
        images=[None] * n_items,
        manifest={"model": "synthetic", "dataset": "synthetic"},
        content=ContentPart(
            head=head,
            fill={m: torch.zeros(d) for m, d in encoder_dims.items()},
            encoder=build("dual:default"),
            record={"fill": "zeros", "source": "benchmark"},
        ),
    )


def demo_items(n: int) -> tuple[list[str], list[bytes]]:
    """The first ``n`` demo items that have both a text and an image: texts, JPEG bytes."""
    catalog = load_dataset("demo").catalog
    texts, images = [], []
    for item in range(len(catalog)):
        path = catalog.image_path(item)
        if path is not None and catalog.texts[item].strip():
            texts.append(catalog.texts[item])
            images.append(Path(path).read_bytes())
        if len(texts) == n:
            break
    return texts, images


def encoder_alone(encoder, texts: list[str], images: list[bytes], batch: int) -> float:
    """Seconds for the encoder to go from the items' bytes to its outputs."""
    began = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(texts), batch):
            pils = [Image.open(io.BytesIO(b)).convert("RGB") for b in images[start : start + batch]]
            inputs = encoder.preprocess(ItemBatch(texts=texts[start : start + batch], images=pils))
            encoder(inputs)
    return time.perf_counter() - began


def through_service(service: Service, requests: list[AddItemsRequest]) -> float:
    began = time.perf_counter()
    for request in requests:
        service.add_items(request)
    return time.perf_counter() - began


def through_http(url: str, requests: list[AddItemsRequest]) -> float:
    with httpx.Client(base_url=url, timeout=600) as client:
        bodies = [request.model_dump_json(exclude_none=True) for request in requests]
        began = time.perf_counter()
        for body in bodies:
            answer = client.post(
                "/items", content=body, headers={"content-type": "application/json"}
            )
            answer.raise_for_status()
        return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=96, help="items ingested per round and side")
    parser.add_argument("--batch", type=int, default=32, help="items per request / encoder call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--users", type=int, default=19_445)
    parser.add_argument("--items", type=int, default=7_050)
    parser.add_argument("--dim", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(limits=args.threads)

    texts, images = demo_items(args.n)
    encoded = [base64.b64encode(b).decode() for b in images]
    encoder = build("dual:default").eval()
    dims = {m: encoder.output_dims()[m] for m in ("image", "text")}
    with tempfile.TemporaryDirectory() as tmp:
        path = content_bundle(args.users, args.items, args.dim, dims).save(Path(tmp) / "bundle")
        service = Service.open(path)
        service.placer()  # loads the bundle's encoder, as `lmmrec serve` does at start
        warm = [ItemContent(item=f"warm{i}", text=texts[i], image=encoded[i]) for i in range(4)]
        service.add_items(AddItemsRequest(items=warm))
        encoder_alone(encoder, texts[:4], images[:4], args.batch)
        print(
            f"{platform.node()} {os.cpu_count()} cores, load average {os.getloadavg()}, "
            f"{args.threads} thread(s); {args.n} demo items per round, batches of {args.batch}; "
            f"catalogue {args.items} items x {args.dim}-d, {args.users} users"
        )
        print(
            "| round | encoder items/s | service items/s | HTTP items/s | service / encoder "
            "| HTTP / encoder |"
        )
        print("|---|---|---|---|---|---|")
        ratios: dict[str, list[float]] = {"service": [], "HTTP": []}

        def requests(prefix: str) -> list[AddItemsRequest]:
            return [
                AddItemsRequest(
                    items=[
                        ItemContent(item=f"{prefix}-{i}", text=texts[i], image=encoded[i])
                        for i in range(start, min(start + args.batch, args.n))
                    ]
                )
                for start in range(0, args.n, args.batch)
            ]

        with BackgroundServer(create_app(service)) as server:
            for round_ in range(args.rounds):
                alone = args.n / encoder_alone(encoder, texts, images, args.batch)
                served = args.n / through_service(service, requests(f"r{round_}"))
                http = args.n / through_http(server.url, requests(f"h{round_}"))
                ratios["service"].append(served / alone)
                ratios["HTTP"].append(http / alone)
                print(
                    f"| {round_ + 1} | {alone:.1f} | {served:.1f} | {http:.1f} | "
                    f"{served / alone:.1%} | {http / alone:.1%} |"
                )
        medians = ", ".join(f"{k} {statistics.median(v):.1%}" for k, v in ratios.items())
        print(f"median ratios: {medians}; load average {os.getloadavg()}")
        print(f"catalogue after the rounds: {service.items.n} items")


if __name__ == "__main__":
    main()

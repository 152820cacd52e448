"""Ingestion and image-download benchmarks (issue 7).

Measures:
  * ingestion speed (reviews per second, end to end: read, dedup, 5-core, split, item text) of
    ``read_amazon`` on generated 2014-format files: reviews as JSON lines with metadata as Python
    literals, and the ratings-only CSV; each in a fresh process, with the peak resident memory
    (``ru_maxrss``) and the memory after imports, at 250k and 1M reviews, to show that memory
    follows the compact columns (about 20 bytes a review), not the file;
  * download throughput of ``download_images`` (16 workers, no rate limit) against a local HTTP
    server in another process that answers after 0 ms or 50 ms with a 256x256 JPEG.

The files are generated deterministically (numpy seed 0) into a temporary folder and deleted.

Usage:
    python benchmarks/bench_ingest.py [--sizes 250000,1000000] [--images 400]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WORDS = [
    "great",
    "quality",
    "price",
    "small",
    "large",
    "soft",
    "easy",
    "works",
    "perfectly",
    "daughter",
    "son",
    "baby",
    "gift",
    "love",
    "would",
    "buy",
    "again",
    "broke",
    "after",
    "week",
    "size",
    "fits",
    "well",
    "cheap",
    "sturdy",
    "color",
    "cute",
    "recommend",
]


def generate(folder: Path, n: int, seed: int = 0) -> dict[str, Path]:
    """2014-format reviews (JSON lines), ratings CSV and metadata (Python literals), n reviews.

    Users and items have power-law activity (about n/8 users and n/20 items), so the 5-core keeps
    part of the data, as with real dumps.
    """
    rng = np.random.default_rng(seed)
    n_users, n_items = n // 8, n // 20
    users = np.minimum(rng.zipf(1.7, n) - 1, n_users - 1)
    users = rng.permutation(n_users)[users]
    items = rng.permutation(n_items)[np.minimum(rng.zipf(1.5, n) - 1, n_items - 1)]
    ratings = rng.integers(1, 6, n)
    times = rng.integers(1_200_000_000, 1_400_000_000, n)
    texts = [" ".join(rng.choice(WORDS, 60)) for _ in range(500)]
    text_of = rng.integers(0, len(texts), n)
    paths = {
        "reviews": folder / f"reviews_{n}.json",
        "ratings": folder / f"ratings_{n}.csv",
        "meta": folder / f"meta_{n}.json",
    }
    with open(paths["reviews"], "w") as reviews, open(paths["ratings"], "w") as ratings_csv:
        for k in range(n):
            user, item = f"A{users[k]:013d}", f"B{items[k]:09d}"
            record = {
                "reviewerID": user,
                "asin": item,
                "reviewerName": "Shopper",
                "helpful": [0, 0],
                "reviewText": texts[text_of[k]],
                "overall": float(ratings[k]),
                "summary": "Five Stars",
                "unixReviewTime": int(times[k]),
                "reviewTime": "01 2, 2014",
            }
            reviews.write(json.dumps(record) + "\n")
            ratings_csv.write(f"{user},{item},{float(ratings[k])},{times[k]}\n")
    with open(paths["meta"], "w") as meta:
        for i in range(n_items):
            record = {
                "asin": f"B{i:09d}",
                "title": f"Baby item &amp; toy {i}",
                "brand": "Acme",
                "categories": [["Baby", "Toys"]],
                "description": texts[i % len(texts)],
                "imUrl": f"http://ecx.images-amazon.com/images/I/{i}.jpg",
            }
            meta.write(repr(record) + "\n")
    return paths


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_ingest(reviews: Path, meta: Path | None) -> dict[str, float]:
    """Run in a fresh process: seconds and memory of one ``read_amazon`` call."""
    from lmmrec.data.formats.amazon import read_amazon

    baseline = _rss_mb()
    started = time.perf_counter()
    data = read_amazon(reviews, meta, version="2014")
    seconds = time.perf_counter() - started
    statistics = data.dataset.info["statistics"]
    return {
        "records": statistics["records_read"],
        "kept": statistics["after_filtering"]["interactions"],
        "seconds": seconds,
        "records_per_s": statistics["records_read"] / seconds,
        "rss_after_imports_mb": baseline,
        "peak_rss_mb": _rss_mb(),
        "file_mb": reviews.stat().st_size / 2**20,
    }


def _serve(port_file: Path, latency: float) -> None:
    """A local image server (HTTP/1.1, keep-alive) answering every GET after ``latency`` s."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from PIL import Image

    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(buffer, "JPEG")
    body = buffer.getvalue()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            time.sleep(latency)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_file.write_text(str(server.server_address[1]))
    server.serve_forever()


def measure_download(folder: Path, n_images: int, latency: float, workers: int) -> dict:
    from lmmrec.data.dataset import Dataset
    from lmmrec.data.images import download_images, write_image_urls
    from lmmrec.data.splits import random_split

    port_file = folder / f"port_{latency}"
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port_file), "--latency", str(latency)]
    )
    try:
        while not port_file.is_file() or not port_file.read_text():
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port_file.read_text()}"
        users = np.repeat(np.arange(3), n_images)
        items = np.tile(np.arange(n_images), 3)
        root = folder / f"shop_{latency}_{workers}"
        dataset = Dataset.from_interactions(
            users, items, random_split(users), name="shop", where="bench"
        )
        dataset.save(root)
        write_image_urls(root, dataset.item_ids, [f"{base}/{i}.jpg" for i in range(n_images)])
        report = download_images(root, workers=workers, per_host_rate=None)
    finally:
        server.terminate()
        server.wait()
    return {
        "latency_ms": latency * 1000,
        "workers": workers,
        "images": report.ok,
        "seconds": report.seconds,
        "images_per_s": report.ok / report.seconds,
    }


def _child(kind: str, reviews: Path, meta: Path | None) -> dict[str, float]:
    command = [sys.executable, __file__, "--measure", kind, str(reviews)]
    command += [str(meta)] if meta else []
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="250000,1000000")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--measure", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--latency", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.latency)
        return
    if args.measure:
        _, reviews, *meta = args.measure
        print(json.dumps(measure_ingest(Path(reviews), Path(meta[0]) if meta else None)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for n in (int(s) for s in args.sizes.split(",")):
            started = time.perf_counter()
            paths = generate(folder, n)
            print(f"generated {n} reviews in {time.perf_counter() - started:.1f} s", flush=True)
            for kind, reviews, meta in (
                ("reviews+meta (JSON, literals)", paths["reviews"], paths["meta"]),
                ("ratings CSV", paths["ratings"], None),
            ):
                result = _child(kind, reviews, meta)
                print(f"{n:>8} {kind:30s} " + json.dumps(result), flush=True)
            for path in paths.values():
                path.unlink()
        for latency in (0.0, 0.05):
            result = measure_download(folder, args.images, latency, workers=16)
            print("download " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

"""Load test of ``lmmrec serve``: requests/s and latency percentiles against a real server.

For each catalogue size, a seeded synthetic bundle (``D``-wide Gaussian vectors; each user with
``--seen`` random seen items) is written to a temporary folder and served by ``lmmrec serve`` in
a child process on 127.0.0.1. A load generator then sends a fixed number of top-20
``POST /recommend`` requests for seeded random users (seen items excluded), at most ``C`` in
flight at once over ``C`` kept-alive connections; the generator's own timer gives each request's
latency (JSON both ways included). It shares the machine's cores with the server, so its own CPU
cost counts: ``--client raw`` (default) is a minimal HTTP/1.1 client on asyncio streams (about
0.1 ms of CPU per request), ``--client httpx`` an ``httpx.AsyncClient`` (several times that).

The approximate index's recall@K against exact, and the in-process time of one single-user
query (one thread, as the server runs), are measured over ``--recall-users`` users for each
``--nprobes`` setting.

Usage:
    python benchmarks/bench_serving.py [--sizes baby,electronics] [--indexes exact,faiss]
        [--concurrency 1,8,32] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from lmmrec.serving.bundle import Bundle
from lmmrec.serving.schemas import RecommendRequest
from lmmrec.serving.service import Service

SIZES = {  # users, items: the MMRec Amazon sets
    "baby": (19_445, 7_050),
    "electronics": (192_403, 63_001),
}


def synthetic_bundle(n_users: int, n_items: int, dim: int, seen: int, seed: int = 0) -> Bundle:
    """Seeded Gaussian vectors; each user has ``seen`` distinct random items."""
    rng = np.random.default_rng(seed)
    items = rng.integers(0, n_items, (n_users, seen))
    matrix = sp.csr_matrix(
        (np.ones(items.size, dtype=np.float32), items.ravel(), np.arange(0, items.size + 1, seen)),
        shape=(n_users, n_items),
    )
    return Bundle(
        user_vecs=rng.standard_normal((n_users, dim), dtype=np.float32),
        item_vecs=rng.standard_normal((n_items, dim), dtype=np.float32),
        user_ids=np.arange(n_users).astype(str),
        item_ids=np.arange(n_items).astype(str),
        seen=matrix,
        texts=[""] * n_items,
        images=[None] * n_items,
        manifest={"model": "synthetic", "dataset": f"synthetic-{n_items}"},
    )


def approximate_index_table(
    bundle: Bundle, nprobes: list[int], n_users: int, k: int
) -> list[tuple[str, float, float]]:
    """``(index, recall@k against exact, median in-process ms per single-user query)`` rows."""
    users = np.random.default_rng(1).choice(bundle.n_users, n_users, replace=False)
    requests = [RecommendRequest(user=str(u), k=k) for u in users]

    def rank(service: Service) -> tuple[list[set[str]], float]:
        queries = [service.query(r) for r in requests]
        found, seconds = [], []
        for query in queries:
            started = time.perf_counter()
            found.append({s.item for s in service.run([query])[0].items})
            seconds.append(time.perf_counter() - started)
        return found, float(np.median(seconds)) * 1000

    truth, exact_ms = rank(Service(bundle))
    rows = [("exact", 1.0, exact_ms)]
    for nprobe in nprobes:
        found, ms = rank(Service(bundle, index="faiss", nprobe=nprobe))
        hits = sum(len(t & f) for t, f in zip(truth, found, strict=True))
        rows.append((f"faiss IVF, nprobe {nprobe}", hits / sum(len(t) for t in truth), ms))
    return rows


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(bundle_dir: Path, index: str, nprobe: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "lmmrec", "serve", str(bundle_dir), "--port", str(port)]
    command += ["--index", index, "--nprobe", str(nprobe)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start in 300 s")


class RawConnection:
    """One kept-alive HTTP/1.1 connection that POSTs JSON and reads ``Content-Length`` bodies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> RawConnection:
        host, port = url.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def post(self, path: str, payload: dict[str, object]) -> tuple[int, bytes]:
        body = json.dumps(payload).encode()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in head[1:] if ": " in line)
        answer = await self.reader.readexactly(int(headers["content-length"]))
        return int(head[0].split()[1]), answer

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


class HttpxConnection:
    """The same calls through a shared ``httpx.AsyncClient``."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(self, path: str, payload: dict[str, object]) -> tuple[int, bytes]:
        response = await self.client.post(path, json=payload)
        return response.status_code, response.content

    async def close(self) -> None:
        return None


async def load(
    url: str, users: np.ndarray, concurrency: int, k: int, client: str
) -> tuple[float, np.ndarray]:
    """Send one request per entry of ``users`` with at most ``concurrency`` in flight.

    Returns:
        (wall seconds, per-request latencies in seconds).
    """
    latencies = np.empty(len(users))
    next_request = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as shared:
        if client == "raw":
            connections = [await RawConnection.open(url) for _ in range(concurrency)]
        else:
            connections = [HttpxConnection(shared) for _ in range(concurrency)]

        async def worker(connection: RawConnection | HttpxConnection, count: int) -> None:
            nonlocal next_request
            while next_request < count:
                i = next_request
                next_request += 1
                started = time.perf_counter()
                status, body = await connection.post("/recommend", {"user": str(users[i]), "k": k})
                latencies[i] = time.perf_counter() - started
                if status != 200 or len(json.loads(body)["items"]) != k:
                    raise RuntimeError(f"bad answer {status}: {body[:200]!r}")

        await asyncio.gather(*(worker(c, min(len(users), 200)) for c in connections))  # warm-up
        next_request, started = 0, time.perf_counter()
        await asyncio.gather(*(worker(c, len(users)) for c in connections))
        wall = time.perf_counter() - started
        for connection in connections:
            await connection.close()
        return wall, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="baby,electronics")
    parser.add_argument("--indexes", default="exact,faiss")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per row")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--seen", type=int, default=9, help="seen items per user")
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--recall-users", type=int, default=1000)
    parser.add_argument(
        "--nprobes", default="4,16,64,256", help="faiss settings for the recall table"
    )
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    args = parser.parse_args()
    torch.set_num_threads(1)  # in-process timings run as the server does
    print(
        f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at the start; "
        f"{args.requests} requests per row, top-{args.k}, D = {args.dim}, {args.client} client"
    )
    load_rows, index_rows = [], []
    for size in args.sizes.split(","):
        n_users, n_items = SIZES[size]
        name = f"{size} ({n_users:,} x {n_items:,})"
        bundle = synthetic_bundle(n_users, n_items, args.dim, args.seen)
        if "faiss" in args.indexes.split(","):
            with threadpool_limits(limits=1):  # as the server runs
                for index, recall, ms in approximate_index_table(
                    bundle, [int(n) for n in args.nprobes.split(",")], args.recall_users, args.k
                ):
                    index_rows.append(f"| {name} | {index} | {recall:.3f} | {ms:.2f} |")
        with tempfile.TemporaryDirectory() as tmp:
            bundle_dir = bundle.save(Path(tmp) / "bundle")
            for index in args.indexes.split(","):
                process, url = start_server(bundle_dir, index, args.nprobe)
                label = index if index == "exact" else f"faiss IVF, nprobe {args.nprobe}"
                try:
                    for concurrency in (int(c) for c in args.concurrency.split(",")):
                        users = np.random.default_rng(concurrency).integers(
                            0, n_users, args.requests
                        )
                        wall, latencies = asyncio.run(
                            load(url, users, concurrency, args.k, args.client)
                        )
                        p50, p99 = np.percentile(latencies, [50, 99]) * 1000
                        load_rows.append(
                            f"| {name} | {label} | {concurrency} | {args.requests / wall:.0f} | "
                            f"{p50:.1f} | {p99:.1f} |"
                        )
                        print(load_rows[-1], flush=True)
                finally:
                    process.terminate()
                    process.wait()
    print("\n| catalogue | index | clients | req/s | p50 ms | p99 ms |")
    print("|---|---|---:|---:|---:|---:|")
    print("\n".join(load_rows))
    if index_rows:
        print(f"\n| catalogue | index | recall@{args.k} vs exact | ms per query, in-process |")
        print("|---|---|---:|---:|")
        print("\n".join(index_rows))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()

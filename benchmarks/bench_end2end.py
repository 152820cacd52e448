"""End-to-end training cost (docs/paradigms.md): steps, epochs, peak memory, bank vs re-encoding.

Three measurements, each VBPR trained end-to-end with an item encoder (default ``dual:default``:
EfficientNet-Lite0 + MiniLM towers with projection heads) on synthetic catalogues with real image
files and texts (``catalogs.py``):

* ``steps``: per catalogue size, strategy (``frozen`` = stored features, ``projection``,
  ``top:1``, ``lora:8``) and batch size: the median step time, the distinct items a step encodes,
  the epoch time (steps per epoch x median step + one catalogue refresh) and the peak memory.
  Each (size, strategy) runs in its own process, one step module trained on with batch sizes
  ascending, so the process's peak resident memory after a batch size is that batch size's peak
  (CPU); on CUDA the allocator's peak is reset per batch size.
* ``bank``: the feature bank (refresh every epoch) against re-encoding the whole catalogue after
  every step (the authors' design), alternating step by step in one process; the per-epoch ratio.
* ``memory``: peak memory of one step against the encoding chunk (fixed batch) and against the
  batch (fixed chunk), with activation checkpointing: it follows the chunk, not the batch.

Usage::

    python benchmarks/bench_end2end.py steps --sizes 1200,7050 --batches 256,1024,2048
    python benchmarks/bench_end2end.py bank --sizes 7050 --batches 256 --strategies top:1
    python benchmarks/bench_end2end.py bank --sizes 7050 --batches 256 --strategies full \
        --random-clip small   # a random small CLIP: affordable on the CPU at Baby size
    python benchmarks/bench_end2end.py memory --sizes 1200
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from catalogs import CLIP_SIZES, content_dataset, random_clip_folder
from lmmrec.data.dataset import Dataset
from lmmrec.encoders import build, extract_features
from lmmrec.encoders.towers import HeadedEncoder
from lmmrec.training import RunConfig, TrainConfig, Trainer
from lmmrec.training.run import build_step
from lmmrec.training.sources import StoredFeatures

CHEAP_STEPS = 10  # timed steps of the runs whose steps take milliseconds (medians need them)


def _config(args: argparse.Namespace, strategy: str, batch: int, **encoder: Any) -> RunConfig:
    section = {"spec": args.encoder, "strategy": strategy, "lr": 1e-4, "chunk_size": args.chunk}
    train = TrainConfig(batch_size=batch, lr=1e-3, ks=[20], device=args.device)
    return RunConfig(model="vbpr", paradigm="end2end", encoder=section | encoder, train=train)


def _peak_gb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _time_steps(trainer: Trainer, batch: int, steps: int) -> tuple[float, float, float]:
    """Median wall and process-CPU seconds of ``steps`` optimiser steps (after one untimed)
    and the mean number of distinct items per step. CPU seconds (all threads) hold up better
    than wall time on a machine shared with other jobs."""
    batches = trainer.sampler.epoch(batch, trainer.rng, trainer.runtime.device)
    walls, cpus, distinct = [], [], []
    for index, step_batch in zip(range(steps + 1), batches, strict=False):
        started, started_cpu = time.perf_counter(), time.process_time()
        with trainer.runtime.autocast():
            loss = trainer.module(step_batch)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
        trainer.step_module.on_step_end(index + 1)
        if trainer.runtime.device.type == "cuda":
            torch.cuda.synchronize()
        if index:
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - started_cpu)
            items = torch.cat([step_batch.pos_items, step_batch.neg_items])
            distinct.append(len(torch.unique(items)))
    return statistics.median(walls), statistics.median(cpus), statistics.mean(distinct)


def _dataset(args: argparse.Namespace, size: int) -> Dataset:
    """The synthetic catalogue of ``size`` items, with its towers' feature set extracted once
    (end-to-end runs whose heads alone train read their tower vectors from it)."""
    dataset = content_dataset(args.work / f"catalog-{size}", size)
    encoder = build(args.encoder)
    if isinstance(encoder, HeadedEncoder):
        extract_features(dataset, encoder.towers_encoder(), name="towers", num_workers=1)
    return dataset


def one(args: argparse.Namespace) -> None:
    """Inside a fresh process: one (size, strategy) over the batch sizes, a JSON line each."""
    torch.set_num_threads(args.threads)
    dataset = _dataset(args, args.size)
    strategy = "projection" if args.strategy == "frozen" else args.strategy
    step = build_step(dataset, _config(args, strategy, args.batch_list[0], **args.encoder_options))
    refresh, refresh_cpu = time.perf_counter(), time.process_time()
    step.refresh()
    refresh, refresh_cpu = time.perf_counter() - refresh, time.process_time() - refresh_cpu
    if args.strategy == "frozen":
        step = StoredFeatures(step.recommender, step.bank.tables())
        refresh = refresh_cpu = 0.0
    for batch in args.batch_list:  # ascending: the process's peak so far is this batch's
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        trainer = Trainer(step, dataset, _config(args, strategy, batch).train)
        seconds, cpu, distinct = _time_steps(trainer, batch, args.steps)
        n_steps = trainer.sampler.n_batches(batch)
        row = {
            "items": args.size,
            "strategy": args.strategy,
            "batch": batch,
            "chunk": args.chunk,
            "distinct_items_per_step": round(distinct),
            "step_s": round(seconds, 4),
            "step_cpu_s": round(cpu, 4),
            "steps_per_epoch": n_steps,
            "refresh_s": round(refresh, 2),
            "epoch_s": round(n_steps * seconds + refresh, 1),
            "epoch_cpu_s": round(n_steps * cpu + refresh_cpu, 1),
            "peak_gb": round(_peak_gb(args.device), 2),
        }
        print(json.dumps(row), flush=True)


def _spawn(
    args: argparse.Namespace,
    size: int,
    strategy: str,
    batches: str | None = None,
    chunk: int | None = None,
    encoder_options: dict[str, Any] | None = None,
) -> list[dict]:
    """Run :func:`one` in a fresh process; its JSON rows."""
    command = [sys.executable, __file__, "one", "--size", str(size), "--strategy", strategy]
    command += ["--encoder", args.encoder, "--device", args.device, "--work", str(args.work)]
    timed = max(args.steps, CHEAP_STEPS) if strategy in ("frozen", "projection") else args.steps
    command += ["--steps", str(timed), "--threads", str(args.threads)]
    command += ["--encoder-options", json.dumps(encoder_options or {})]
    command += ["--batches", batches or args.batches, "--chunk", str(chunk or args.chunk)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


COLUMNS = (
    "items",
    "strategy",
    "batch",
    "chunk",
    "distinct_items_per_step",
    "step_s",
    "step_cpu_s",
    "epoch_s",
    "epoch_cpu_s",
)


def _print(rows: list[dict]) -> None:
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in (*COLUMNS, "peak_gb")) + " |", flush=True)


def steps(args: argparse.Namespace) -> None:
    print("| " + " | ".join((*COLUMNS, "peak GB")) + " |")
    for size in args.size_list:
        _dataset(args, size)  # catalogue and tower features made here, not in a timed process
        for strategy in args.strategies.split(","):
            _print(_spawn(args, size, strategy))


def memory(args: argparse.Namespace) -> None:
    """Peak memory with activation checkpointing: chunk sweep at a fixed batch, then a batch
    sweep at a fixed chunk (each chunk in its own process)."""
    print("| " + " | ".join((*COLUMNS, "peak GB")) + " |")
    checkpointing = {"activation_checkpointing": True}
    size, strategy = args.size_list[0], args.strategies
    for chunk in (32, 128, 512):
        rows = _spawn(args, size, strategy, str(args.batch_list[-1]), chunk, checkpointing)
        _print(rows)
    _print(_spawn(args, size, strategy, chunk=64, encoder_options=checkpointing))


def bank(args: argparse.Namespace) -> None:
    """Bank (refresh every epoch) vs re-encoding after every step, alternating in one process."""
    torch.set_num_threads(args.threads)
    size, batch = args.size_list[0], args.batch_list[0]
    dataset = _dataset(args, size)
    trainers = {}
    for name, refresh in (("bank", "epoch"), ("re-encode", "step")):
        config = _config(args, args.strategies, batch, refresh=refresh)
        trainers[name] = Trainer(build_step(dataset, config), dataset, config.train)
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(args.steps):
        for name, trainer in trainers.items():
            times[name].append(_time_steps(trainer, batch, 1)[1])  # CPU seconds
    started = time.process_time()
    trainers["bank"].step_module.refresh()
    refresh = time.process_time() - started
    n_steps = trainers["bank"].sampler.n_batches(batch)
    bank_epoch = n_steps * statistics.median(times["bank"]) + refresh
    encode_epoch = n_steps * statistics.median(times["re-encode"])
    print(f"{size} items, batch {batch}, {args.strategies}, {n_steps} steps per epoch")
    for name in times:
        print(f"{name}: step median {statistics.median(times[name]):.3f} CPU s over {args.steps}")
    print(f"catalogue refresh {refresh:.2f} CPU s")
    ratio = encode_epoch / bank_epoch
    print(f"epoch: bank {bank_epoch:.0f} CPU s, re-encode {encode_epoch:.0f} CPU s, {ratio:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["steps", "bank", "memory", "one"])
    parser.add_argument("--sizes", default="1200,7050")
    parser.add_argument("--size", type=int, default=1200)
    parser.add_argument("--batches", default="256,1024,2048")
    parser.add_argument("--strategies", default="frozen,projection,top:1,lora:8")
    parser.add_argument("--strategy", default="projection")
    parser.add_argument("--encoder", default="dual:default")
    parser.add_argument(
        "--random-clip",
        choices=sorted(CLIP_SIZES),
        help="use a random CLIP of this size (catalogs.CLIP_SIZES) instead of --encoder",
    )
    parser.add_argument("--encoder-options", default="{}")
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/lmmrec-bench-end2end"))
    args = parser.parse_args()
    args.size_list = [int(s) for s in args.sizes.split(",")]
    args.batch_list = [int(b) for b in args.batches.split(",")]
    args.encoder_options = json.loads(args.encoder_options)
    if args.random_clip:
        folder = args.work / f"clip-{args.random_clip}"
        args.encoder = f"clip:{random_clip_folder(folder, args.random_clip)}"
    {"steps": steps, "bank": bank, "memory": memory, "one": one}[args.mode](args)


if __name__ == "__main__":
    main()

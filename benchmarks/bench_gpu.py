"""GPU figures (CUDA, bf16) with a CLIP ViT-B/16-size encoder: extraction, end-to-end, the bank.

No CLIP weights ship offline, so the encoder is a randomly initialised ``CLIPModel`` of ViT-B/16's
size (vision: 12 layers, 768-d, 16 px patches, 224 px; text: 12 layers, 512-d, 77 tokens; a
character-level tokenizer written here): right for time and memory, not for accuracy. The
catalogue is a Baby-sized synthetic one (7,050 items, JPEG files of 256 px, ``catalogs.py``).

1. frozen extraction throughput from the image files (``extract_features``: DataLoader workers
   decode, bf16 inference), items per second;
2. end-to-end VBPR + that CLIP with every layer trained (``full``, activation checkpointing per
   encoding chunk), one epoch per batch size: epoch seconds, distinct items encoded, peak memory;
3. the feature bank against re-encoding the catalogue after every step, alternating.

Usage (on the GPU machine)::

    python benchmarks/bench_gpu.py --work /tmp/gpu --batches 4096,16384
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from bench_end2end import _time_steps
from catalogs import content_dataset, random_clip_folder
from lmmrec.encoders import build, extract_features
from lmmrec.training import RunConfig, TrainConfig, Trainer, train
from lmmrec.training.run import build_step


def extraction(dataset, spec: str, workers: int, batch: int) -> dict:
    """Two extractions (the first warms the file cache); the second's throughput."""
    rates = []
    for run in range(2):
        features = extract_features(
            dataset,
            build(spec),
            name=f"clip-b16-{run}",
            batch_size=batch,
            num_workers=workers,
            precision="bf16",
            overwrite=True,
            progress=False,
        )
        rates.append(features.manifest["timing"]["items_per_second"])
    return {
        "items": dataset.n_items,
        "batch": batch,
        "workers": workers,
        "items_per_second": [round(r) for r in rates],
    }


def _end2end(spec: str, batch: int, chunk: int, **encoder: object) -> RunConfig:
    section = {
        "spec": spec,
        "strategy": "full",
        "lr": 1e-5,
        "chunk_size": chunk,
        "activation_checkpointing": True,
        "num_workers": 15,
    } | encoder
    train_config = TrainConfig(
        epochs=1, batch_size=batch, ks=[20], device="cuda", checkpoint_every_seconds=0
    )
    return RunConfig(model="vbpr", paradigm="end2end", encoder=section, train=train_config)


def end_to_end(dataset, spec: str, batch: int, chunk: int) -> dict:
    """One epoch of VBPR + CLIP, all layers trained: the epoch's and the evaluation's seconds."""
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    fit = train(_end2end(spec, batch, chunk), dataset=dataset, resume=False).fit
    record = fit.history[0]
    trainer_steps = -(-dataset.train.nnz // batch)
    return {
        "batch": batch,
        "chunk": chunk,
        "steps": trainer_steps,
        "epoch_train_s": round(record["train_seconds"], 1),
        "valid_s": round(fit.time["valid"], 1),
        "whole_s": round(time.perf_counter() - started),
        "peak_gb": round(torch.cuda.max_memory_allocated() / 1e9, 1),
    }


def bank_vs_reencode(dataset, spec: str, batch: int, steps: int) -> dict:
    """Bank (refresh per epoch) vs the whole catalogue re-encoded after every step (top:1)."""
    trainers = {}
    for name, refresh in (("bank", "epoch"), ("re-encode", "step")):
        config = _end2end(
            spec, batch, 256, strategy="top:1", refresh=refresh, activation_checkpointing=False
        )
        trainers[name] = Trainer(build_step(dataset, config), dataset, config.train)
    times = {name: [] for name in trainers}
    for _ in range(steps):
        for name, trainer in trainers.items():
            times[name].append(_time_steps(trainer, batch, 1)[0])
    started = time.perf_counter()
    trainers["bank"].step_module.refresh()
    torch.cuda.synchronize()
    refresh = time.perf_counter() - started
    n_steps = trainers["bank"].sampler.n_batches(batch)
    medians = {name: statistics.median(t) for name, t in times.items()}
    bank_epoch = n_steps * medians["bank"] + refresh
    encode_epoch = n_steps * medians["re-encode"]
    return {
        "batch": batch,
        "steps_per_epoch": n_steps,
        "step_s": medians,
        "refresh_s": round(refresh, 2),
        "epoch_s": {"bank": round(bank_epoch), "re-encode": round(encode_epoch)},
        "ratio": round(encode_epoch / bank_epoch, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/lmmrec-gpu"))
    parser.add_argument("--items", type=int, default=7050)
    parser.add_argument("--batches", default="4096,16384")
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--parts", default="extract,end2end,bank")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    spec = f"clip:{random_clip_folder(args.work / 'clip-b16', 'b16')}"
    dataset = content_dataset(
        args.work / f"catalog-{args.items}", args.items, image_size=256, suffix=".jpg", workers=16
    )
    print(
        f"device {torch.cuda.get_device_name()}, setup {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    results: dict[str, object] = {"device": torch.cuda.get_device_name()}
    parts = args.parts.split(",")
    if "extract" in parts:
        results["extract"] = extraction(dataset, spec, workers=15, batch=512)
        print(json.dumps(results["extract"]), flush=True)
    if "end2end" in parts:
        results["end2end"] = []
        for batch in (int(b) for b in args.batches.split(",")):
            results["end2end"].append(end_to_end(dataset, spec, batch, args.chunk))
            print(json.dumps(results["end2end"][-1]), flush=True)
    if "bank" in parts:
        results["bank"] = bank_vs_reencode(dataset, spec, batch=256, steps=5)
        print(json.dumps(results["bank"]), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

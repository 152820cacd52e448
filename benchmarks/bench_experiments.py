"""The experiment runner's overhead per run against bare ``train()``; demo.yaml's wall time.

    python benchmarks/bench_experiments.py [--runs 12] [--epochs 2] [--threads 1] [--demo]

Overhead: the same ``--runs`` BPR cells on the demo shop (loaded once, from its cache) are trained
twice: with ``lmmrec.training.train`` in a plain loop (fresh run directories, the dataset passed
in), and with ``run_experiment`` on a spec of the same cells. The difference of the wall times,
divided by the number of runs, is the runner's cost per run: planning and hashing (amortised),
status files, the results table rewritten after every run, the progress display. The order
alternates over ``--repeats`` rounds and the medians are reported. On a shared machine that
difference is noisy, so the runner's wall time outside its ``train()`` calls is also measured
(``train`` wrapped by a timer): the runner's own work, directly.

``--demo`` also runs ``configs/demo.yaml`` into a temporary folder (features extracted if the demo
shop lacks them, then every cell to early stopping) and prints its wall time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import lmmrec.training
from lmmrec.data.demo import load_demo
from lmmrec.experiments import load_experiment, run_experiment
from lmmrec.training import RunConfig, train

LRS = [1e-3, 2e-3, 3e-3, 5e-3, 7e-3, 1e-2]


def _spec(out: Path, runs: int, epochs: int, threads: int) -> dict:
    seeds = list(range(max(1, runs // len(LRS))))
    return {
        "name": "overhead",
        "output_dir": str(out),
        "datasets": {"shop": "demo"},
        "models": {"bpr": {"grid": {"lr": LRS[: min(runs, len(LRS))]}}},
        "seeds": seeds,
        "train": {"epochs": epochs, "patience": 100},
        "threads": threads,
    }


def _bare(spec: dict, out: Path, dataset) -> float:  # type: ignore[no-untyped-def]
    cells = load_experiment(spec).cells
    started = time.perf_counter()
    for i, cell in enumerate(cells):
        config = RunConfig.model_validate({**cell.config, "output_dir": str(out), "name": str(i)})
        train(config, dataset=dataset, resume=False)
    return time.perf_counter() - started


def _runner(spec: dict) -> tuple[float, float]:
    """(wall seconds, seconds spent inside train())."""
    inside = [0.0]

    def timed(*a, **k):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return train(*a, **k)
        finally:
            inside[0] += time.perf_counter() - started

    lmmrec.training.train = timed
    try:
        started = time.perf_counter()
        result = run_experiment(spec, progress=False)
        seconds = time.perf_counter() - started
    finally:
        lmmrec.training.train = train
    assert result.counts()["done"] == len(result.results), result.results["error"].tolist()
    return seconds, inside[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--demo", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = load_demo()
    bare, runner, own = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            spec = _spec(Path(tmp) / f"exp{repeat}", args.runs, args.epochs, args.threads)
            n = len(load_experiment(spec).cells)
            order = ("bare", "runner") if repeat % 2 == 0 else ("runner", "bare")
            for which in order:
                if which == "bare":
                    bare.append(_bare(spec, Path(tmp) / f"bare{repeat}", dataset))
                else:
                    wall, inside = _runner(spec)
                    runner.append(wall)
                    own.append((wall - inside) / n)
            print(
                f"round {repeat + 1}: {n} runs, bare train() {bare[-1]:.2f} s, "
                f"runner {runner[-1]:.2f} s, difference {(runner[-1] - bare[-1]) / n:+.3f} s/run, "
                f"runner outside train() {own[-1]:.3f} s/run"
            )
        b, r = statistics.median(bare), statistics.median(runner)
        print(
            f"median over {args.repeats} rounds: bare {b:.2f} s ({b / n:.3f} s/run), runner "
            f"{r:.2f} s ({r / n:.3f} s/run): overhead {(r - b) / n:+.3f} s per run; runner "
            f"outside train() {statistics.median(own):.3f} s per run"
        )
        if args.demo:
            spec = load_experiment(Path(__file__).parents[1] / "configs" / "demo.yaml").spec
            data = spec.model_dump(exclude_none=True) | {"output_dir": str(Path(tmp) / "demo")}
            started = time.perf_counter()
            result = run_experiment(data)
            print(
                f"configs/demo.yaml: {len(result.results)} runs, {result.counts()} in "
                f"{time.perf_counter() - started:.0f} s"
            )


if __name__ == "__main__":
    main()

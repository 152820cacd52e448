"""Where full-ranking evaluation time goes, on the real Amazon interactions.

Builds the validation :class:`~lmmrec.evaluation.Evaluator` of an MMRec folder and times, on seeded
random vectors (``D`` wide), the whole ``Evaluator.evaluate``; the one ranker alone
(``Ranker.top_k``: score products, masking and the top-K selection); the score products
``user_vecs[block] @ item_vecs.T`` alone, written into one reused block buffer, three ways: on one
thread as each ranking worker computes them (numpy's OpenBLAS, single-threaded), by ``torch.mm``,
and by one plain numpy call (OpenBLAS's own threads); and the top-K alone over blocks of random
scores, two ways: a plain ``torch.topk`` (the evaluator's former ranking) and the ranker's CPU
selection (:func:`lmmrec.evaluation.selection.select_top_k`) on one thread. Prints the median of
``--repeats`` timed calls (after one warm-up call) in seconds, and the load average (the two
cores are shared). Runs with the trainer's CPU allocator setting (``keep_freed_memory``).

Usage:
    python benchmarks/bench_eval.py [--data ../shared/data/amazon/sports] [--dim 64]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from lmmrec.data.formats.mmrec import read_mmrec
from lmmrec.evaluation import Evaluator, Ranker
from lmmrec.evaluation.ranking import single_threaded_blas
from lmmrec.evaluation.selection import select_top_k
from lmmrec.runtime import keep_freed_memory
from timing import median_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/amazon/sports"))
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--block", type=int, default=2048, help="users per scoring block")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    dataset = read_mmrec(args.data)
    evaluator = Evaluator(dataset, "valid", batch_size=args.block)
    k_max = evaluator.ks[-1]
    gen = torch.Generator().manual_seed(0)
    user_vecs = torch.randn(dataset.n_users, args.dim, generator=gen)
    item_vecs = torch.randn(dataset.n_items, args.dim, generator=gen)
    item_vecs_t = item_vecs.T.contiguous()
    users = torch.from_numpy(evaluator.users)
    blocks = users.split(args.block)  # the users evaluate ranks
    seen = dataset.train
    scores = torch.empty(args.block, dataset.n_items)

    def products() -> None:
        for block in blocks:
            torch.mm(user_vecs[block], item_vecs_t, out=scores[: len(block)])

    prepared = Ranker(item_vecs)
    padded = torch.full((args.block, prepared.width), -torch.inf)  # the ranker's layout
    padded[:, : dataset.n_items] = torch.randn(args.block, dataset.n_items, generator=gen)
    found = (np.empty((args.block, k_max), np.float32), np.empty((args.block, k_max), np.int64))

    def ranker_products() -> None:
        with single_threaded_blas():
            for block in blocks:
                prepared._products(user_vecs[block], scores[: len(block)])

    def numpy_products() -> None:
        for block in blocks:
            np.matmul(
                user_vecs[block].numpy(), item_vecs_t.numpy(), out=scores[: len(block)].numpy()
            )

    def torch_top_k() -> None:
        for block in blocks:
            scores[: len(block)].topk(k_max, dim=1, sorted=True)

    def selection_alone() -> None:
        for block in blocks:
            select_top_k(
                padded[: len(block)].numpy(), dataset.n_items, prepared.groups, k_max, *found
            )

    def ranker() -> None:
        Ranker(item_vecs).top_k(user_vecs, k_max, users=users, seen=seen, block_size=args.block)

    products()
    load_before = os.getloadavg()[0]
    with torch.inference_mode():
        timings = {
            "evaluate (all of it)": median_seconds(
                lambda: evaluator.evaluate(user_vecs, item_vecs), args.repeats
            ),
            f"Ranker.top_k (K = {k_max}): products, masking, top-K selection": median_seconds(
                ranker, args.repeats
            ),
            "score products alone, on one thread as each ranking worker runs them": median_seconds(
                ranker_products, args.repeats
            ),
            "score products alone, torch.mm (MKL)": median_seconds(products, args.repeats),
            "score products alone, one numpy call (OpenBLAS threads)": median_seconds(
                numpy_products, args.repeats
            ),
            f"torch.topk (K = {k_max}) over the score blocks alone": median_seconds(
                torch_top_k, args.repeats
            ),
            f"top-K selection (K = {k_max}) over the score blocks alone, one thread": (
                median_seconds(selection_alone, args.repeats)
            ),
        }
    load_after = os.getloadavg()[0]
    print(
        f"{dataset.name}: {evaluator.n_users} users x {dataset.n_items} items, D = {args.dim}, "
        f"{len(blocks)} blocks, {torch.get_num_threads()} torch threads, load average "
        f"{load_before:.1f} before, {load_after:.1f} after"
    )
    print("| part | s |")
    print("|---|---:|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()

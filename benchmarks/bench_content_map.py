"""Time of fitting the ridge map that places new items (lmmrec.models.content_map).

For item counts and feature widths of the demo shop and of MMRec's Amazon folders (4,096-d image
+ 384-d text features), random features and 64-d targets: the seconds of ``fit_ridge_path``
with every default penalty's map (what a choice on validation needs: the Gram matrix, one
Cholesky solve per penalty), then of the leave-one-out errors (needed only without validation
interactions on new items: one eigendecomposition), and of ``torch.linalg.svd`` of the same
matrix (the decomposition a textbook fit would start from). Prints one line per shape
(benchmarks/README.md, "New items placed by a map").

Usage:
    python benchmarks/bench_content_map.py [--shapes demo,baby,clothing] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from lmmrec.models.content_map import RIDGES, fit_ridge_path

SHAPES = {  # name: (warm items, {modality: width})
    "demo": (1060, {"image": 1280, "text": 384}),
    "baby": (7050, {"image": 4096, "text": 384}),
    "sports": (18357, {"image": 4096, "text": 384}),
    "clothing": (23033, {"image": 4096, "text": 384}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="demo,baby,clothing")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{len(RIDGES)} penalties, {args.threads} threads")
    print("shape      items  features  maps s  leave-one-out s  torch.linalg.svd s")
    for name in args.shapes.split(","):
        n, dims = SHAPES[name]
        gen = torch.Generator().manual_seed(0)
        feats = {m: torch.randn(n, d, generator=gen) for m, d in dims.items()}
        targets = torch.randn(n, 64, generator=gen)
        start = time.perf_counter()
        path = fit_ridge_path(feats, targets)
        for ridge in RIDGES:
            path.head(ridge)
        fit = time.perf_counter() - start
        start = time.perf_counter()
        assert len(path.loo_error) == len(RIDGES)
        loo = time.perf_counter() - start
        start = time.perf_counter()
        torch.linalg.svd(torch.cat(list(feats.values()), dim=1).double(), full_matrices=False)
        svd = time.perf_counter() - start
        print(f"{name:9s} {n:6d}  {sum(dims.values()):8d}  {fit:6.1f}  {loo:15.1f}  {svd:18.1f}")


if __name__ == "__main__":
    main()

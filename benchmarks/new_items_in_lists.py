"""How often items without training interactions (new items) reach the runs' top-K lists.

For each run directory: its best checkpoint's final vectors, every test user's top-K under the
evaluation protocol (training items masked, the one ranker), then the share of the K slots that
hold a cold item (:meth:`lmmrec.data.dataset.Dataset.cold_items`) and the share of users with at
least one: with the cold items' learned vectors, and with the cold items placed from their
features by the model's own content part (``content``; VBPR, FREEDOM, BM3) and by the run's ridge
map (``mapped``; any run trained with features, :meth:`lmmrec.training.Trainer.content_map`), as a
service placing new items so would rank them; beside them, the test users' mean score of the
cold items so placed and of the warm items (learned vectors), which shows the two scales. Prints
one line per run and placement (benchmarks/README.md, "The new items of the demo shop", "New
items placed by a map").

Usage:
    python benchmarks/new_items_in_lists.py RUN_DIR [RUN_DIR ...] [--k 20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lmmrec.evaluation.ranking import Ranker
from lmmrec.models.cold_start import content_item_vectors
from lmmrec.training.run import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--k", type=int, default=20, help="list length K")
    args = parser.parse_args()
    print(
        "run                        model     seed  placement  cold slots  users with one"
        "  mean score cold  mean score warm"
    )
    for run_dir in args.runs:
        config, dataset, trainer = load_run(run_dir)
        feats = trainer.item_features()
        users, items = trainer.embed(feats)
        cold = torch.from_numpy(dataset.cold_items())
        placements = {"learned": items}
        cold_feats = {m: f[cold] for m, f in feats.items()}
        content = content_item_vectors(trainer.model, cold_feats) if feats else None
        if content is not None:
            placements["content"] = items.clone()
            placements["content"][cold] = content
        if feats:
            placements["mapped"] = items.clone()
            with torch.no_grad():
                placements["mapped"][cold] = trainer.content_map(feats).head(cold_feats)
        test_users = torch.from_numpy((dataset.test.getnnz(axis=1) > 0).nonzero()[0])
        seen = dataset.train[test_users.numpy()]
        queries = users[test_users]  # [R, D]
        warm_score = float((queries @ items[~cold].T).mean())
        for name, vectors in placements.items():
            top = Ranker(vectors).top_k(queries, args.k, seen=seen)
            in_list = cold[top.items]  # [R, K]
            cold_score = float((queries @ vectors[cold].T).mean())
            print(
                f"{run_dir.name:26s} {config.model:9s} {config.train.seed:4d}  {name:9s} "
                f"{in_list.float().mean():10.4f}  {in_list.any(dim=1).float().mean():14.3f}"
                f"  {cold_score:15.3f}  {warm_score:15.3f}"
            )


if __name__ == "__main__":
    main()

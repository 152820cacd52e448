"""Tiny experiment files for the tests (the data fixture is ``tiny_source`` in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FEATURES = "rand"


def tiny_spec(source: str, output_dir: Path, **changes: Any) -> dict[str, Any]:
    """BPR (2 learning rates) and VBPR (2 reg weights) x 2 seeds, 2 epochs each: 8 runs."""
    spec: dict[str, Any] = {
        "name": "tiny",
        "output_dir": str(output_dir),
        "datasets": {"tiny": source},
        "encoders": {FEATURES: {"features": FEATURES}},
        "models": {
            "bpr": {"params": {"embedding_size": 8}, "grid": {"lr": [0.01, 0.05]}},
            "vbpr": {"params": {"embedding_size": 8}, "grid": {"reg_weight": [0.1, 0.001]}},
        },
        "seeds": [1, 2],
        "threads": 1,
        "train": {"epochs": 2, "batch_size": 128, "eval_batch_size": 64},
    }
    spec.update(changes)
    return spec

"""Recommenders. Importing this package registers every built-in model."""

from lmmrec.models import (  # noqa: F401  (registration side effect)
    bm3,
    bpr,
    dualgnn,
    freedom,
    grcn,
    lattice,
    lightgcn,
    mmgcl,
    mmgcn,
    slmrec,
    vbpr,
)
from lmmrec.models.base import ItemFeatures, ModelConfig, ModelInputs, Recommender
from lmmrec.models.registry import build, get, names, register

__all__ = [
    "ItemFeatures",
    "ModelConfig",
    "ModelInputs",
    "Recommender",
    "build",
    "get",
    "names",
    "register",
]

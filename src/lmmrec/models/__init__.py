"""Recommenders. Importing this package registers every built-in model."""

from lmmrec.models import bpr, lightgcn  # noqa: F401  (registration side effect)
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

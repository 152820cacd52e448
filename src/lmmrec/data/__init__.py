"""Datasets: interactions, splits, item catalogs, feature sets and their readers."""

from lmmrec.data.catalog import ItemCatalog
from lmmrec.data.dataset import Dataset
from lmmrec.data.features import FeatureSet
from lmmrec.data.loading import load_dataset

__all__ = ["Dataset", "FeatureSet", "ItemCatalog", "load_dataset"]

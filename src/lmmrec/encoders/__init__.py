"""Item encoders (sbert, cnn, clip, pair, dual, vlmo) and feature extraction.

``build("clip:/models/clip-b16")`` makes an :class:`ItemEncoder`; :func:`extract_features` runs it
over a dataset's items into a stored feature set. See ``docs/encoders.md``.
"""

from lmmrec.encoders.base import ItemEncoder, Layout, Strategy, fuse
from lmmrec.encoders.features import apply_missing_policy, extract_features, missing_mask
from lmmrec.encoders.preprocessing import ItemBatch, Preprocessor
from lmmrec.encoders.registry import build, get, names, parse_spec, register

__all__ = [
    "ItemBatch",
    "ItemEncoder",
    "Layout",
    "Preprocessor",
    "Strategy",
    "apply_missing_policy",
    "build",
    "extract_features",
    "fuse",
    "get",
    "missing_mask",
    "names",
    "parse_spec",
    "register",
]

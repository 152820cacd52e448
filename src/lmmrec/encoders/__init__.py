"""Item encoders (sbert, cnn, clip, pair, dual, vlmo), feature extraction and fine-tuning.

``build("clip:/models/clip-b16")`` makes an :class:`ItemEncoder`; :func:`extract_features` runs it
over a dataset's items into a stored feature set; :func:`finetune` adapts it on the dataset's
(image, text) pairs and saves it (``ItemEncoder.save``); :func:`load_encoder` takes a saved folder
or a spec. See ``docs/encoders.md``.
"""

from lmmrec.encoders.base import ItemEncoder, Layout, Strategy, fuse
from lmmrec.encoders.features import apply_missing_policy, extract_features, missing_mask
from lmmrec.encoders.finetune import FinetuneConfig, FinetuneResult, finetune, finetune_config
from lmmrec.encoders.preprocessing import ItemBatch, Preprocessor
from lmmrec.encoders.registry import build, get, names, parse_spec, register
from lmmrec.encoders.saved import is_saved_encoder, load_encoder

__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "ItemBatch",
    "ItemEncoder",
    "Layout",
    "Preprocessor",
    "Strategy",
    "apply_missing_policy",
    "build",
    "extract_features",
    "finetune",
    "finetune_config",
    "fuse",
    "get",
    "is_saved_encoder",
    "load_encoder",
    "missing_mask",
    "names",
    "parse_spec",
    "register",
]

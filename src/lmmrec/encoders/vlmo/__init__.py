"""VLMo (Bao et al., NeurIPS 2022): a mixture-of-modality-experts vision-language transformer.

``VLMo`` keeps the official parameter names, so official checkpoints load by name
(:func:`load_vlmo`); ``VLMoTokenizer`` prepares text; the pre-training objectives live in
:mod:`lmmrec.encoders.vlmo.objectives`. Importing this package registers the ``vlmo`` item encoder
(:class:`VLMoEncoder`, spec ``vlmo:/path/to/checkpoint.pt``).
"""

from lmmrec.encoders.vlmo.checkpoint import (
    LoadReport,
    config_from_state_dict,
    load_state_dict_into,
    load_vlmo,
    read_checkpoint,
)
from lmmrec.encoders.vlmo.config import PRESETS, VLMoConfig
from lmmrec.encoders.vlmo.encoder import VLMoEncoder
from lmmrec.encoders.vlmo.model import VLMo
from lmmrec.encoders.vlmo.tokenizer import TextBatch, VLMoTokenizer

__all__ = [
    "PRESETS",
    "LoadReport",
    "TextBatch",
    "VLMo",
    "VLMoConfig",
    "VLMoEncoder",
    "VLMoTokenizer",
    "config_from_state_dict",
    "load_state_dict_into",
    "load_vlmo",
    "read_checkpoint",
]

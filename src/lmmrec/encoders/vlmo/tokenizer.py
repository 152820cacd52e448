"""VLMo text tokenisation: BERT-uncased WordPiece, ``[CLS] ... [SEP]``, padded to ``max_text_len``.

The official data pipeline calls ``BertTokenizer("bert-base-uncased")`` with
``padding="max_length", truncation=True, max_length=max_text_len`` (40). Here the vocabulary comes
from a local folder (a saved tokenizer, or just ``vocab.txt``) or a ``vocab.txt`` file; nothing is
downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmmrec.errors import ConfigError


@dataclass(frozen=True)
class TextBatch:
    """ids (B, Lt) int64 WordPiece ids; mask (B, Lt) int64, 1 on real tokens and 0 on padding."""

    ids: torch.Tensor
    mask: torch.Tensor


def load_bert_tokenizer(path: str | Path) -> Any:
    """A lower-casing WordPiece ``BertTokenizer`` from a local folder or ``vocab.txt`` file."""
    from transformers import BertTokenizer

    path = Path(path)
    if path.is_file():
        return BertTokenizer(vocab=str(path), do_lower_case=True)
    if not path.is_dir():
        raise ConfigError(
            f"tokenizer not found: {path} (give a folder with the bert-base-uncased tokenizer "
            "files, or its vocab.txt)"
        )
    if not any((path / name).is_file() for name in ("vocab.txt", "tokenizer.json")):
        raise ConfigError(f"tokenizer folder {path} has neither vocab.txt nor tokenizer.json")
    return BertTokenizer.from_pretrained(str(path), local_files_only=True)


class VLMoTokenizer:
    """Lower-casing WordPiece tokenizer that always returns ``max_text_len`` tokens per text."""

    def __init__(self, path: str | Path, max_text_len: int = 40) -> None:
        self._tokenizer = load_bert_tokenizer(path)
        self.max_text_len = max_text_len

    @property
    def vocab_size(self) -> int:
        return len(self._tokenizer)

    def __call__(self, texts: Sequence[str]) -> TextBatch:
        """B texts -> :class:`TextBatch` of exactly ``max_text_len`` tokens each."""
        encoded = self._tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_text_len,
            return_tensors="pt",
        )
        return TextBatch(ids=encoded["input_ids"].long(), mask=encoded["attention_mask"].long())

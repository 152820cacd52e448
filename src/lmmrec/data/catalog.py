"""Item content: per item a text and an image reference, aligned with item indices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image

from lmmrec.errors import DataError


@dataclass
class ItemCatalog:
    """Text and image of every item; row ``i`` describes item index ``i``.

    Attributes:
        texts: ``n_items`` strings; ``""`` where an item has no text.
        images: ``n_items`` image paths, relative to ``root`` or absolute; ``None`` where an item
            has no image. Missing or unreadable images are left to the encoders' missing-modality
            policy, so rows never shift.
        root: folder that relative image paths are resolved against.
    """

    texts: list[str]
    images: list[str | None]
    root: Path | None = None

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.images):
            raise DataError(
                f"item catalog has {len(self.texts)} texts but {len(self.images)} image entries; "
                "give one text and one image reference (or None) per item"
            )

    def __len__(self) -> int:
        return len(self.texts)

    def image_path(self, item: int) -> Path | None:
        """Absolute path of item ``item``'s image, or ``None`` if it has none."""
        ref = self.images[item]
        if ref is None or ref == "":
            return None
        path = Path(ref)
        return path if path.is_absolute() or self.root is None else self.root / path

    def load_image(self, item: int) -> Image.Image | None:
        """Item ``item``'s image as RGB, or ``None`` if it has none or it cannot be decoded."""
        path = self.image_path(item)
        if path is None or not path.is_file():
            return None
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except OSError:
            return None

    def to_frame(self, root: Path | None = None) -> pd.DataFrame:
        """Columns ``text`` and ``image``, one row per item, for storing in folder ``root``.

        Relative image paths are kept when ``root`` is the catalog's own root (or either is
        ``None``); otherwise they are made absolute, since they would not resolve from ``root``.
        """
        images = self.images
        if (
            root is not None
            and self.root is not None
            and (Path(root).resolve() != Path(self.root).resolve())
        ):
            paths = (self.image_path(i) for i in range(len(self)))
            images = [None if path is None else str(path.absolute()) for path in paths]
        return pd.DataFrame({"text": self.texts, "image": images})

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        root: Path | None,
        text_column: str = "text",
        image_column: str = "image",
    ) -> ItemCatalog:
        """Build from a frame already ordered by item index; absent columns mean no content."""
        n = len(frame)
        texts: Sequence[str] = (
            frame[text_column].fillna("").astype(str).tolist() if text_column in frame else [""] * n
        )
        images: list[str | None] = (
            [None if pd.isna(v) or v == "" else str(v) for v in frame[image_column]]
            if image_column in frame
            else [None] * n
        )
        return cls(texts=list(texts), images=images, root=root)

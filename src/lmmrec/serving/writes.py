"""Checking and decoding the content of items written through the service.

:func:`decode_items` turns an :class:`~lmmrec.serving.schemas.AddItemsRequest` into texts and
PIL images for the bundle's encoder, or raises one
:class:`~lmmrec.serving.service.RequestError` that names the item's field and the fix:

- an image that is not base64 (422), larger than ``max_image_bytes`` once decoded (413), that
  Pillow cannot decode, or with more than ``max_image_pixels`` pixels (a decompression bomb, 422);
- a text longer than ``max_text_chars`` (422);
- a modality the bundle's model does not read (422), or an item with no content at all (422);
- the same raw id twice in one request (422).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from lmmrec.serving.errors import RequestError
from lmmrec.serving.schemas import AddItemsRequest


@dataclass(frozen=True)
class WriteLimits:
    """What one written item may hold.

    Attributes:
        max_image_bytes: an image's size once base64-decoded (``lmmrec serve
            --max-image-bytes``).
        max_text_chars: a text's length in characters (``--max-text-chars``).
        max_image_pixels: width x height of a decoded image (Pillow refuses to expand more).
        max_request_bytes: a write request's declared body (``--max-request-bytes``).
    """

    max_image_bytes: int = 8 * 1024 * 1024
    max_text_chars: int = 10_000
    max_image_pixels: int = 40_000_000
    max_request_bytes: int = 64 * 1024 * 1024


@dataclass
class DecodedItems:
    """``n`` items ready for the encoder: texts (``""``: none), images (``None``: none) and the
    references kept in the catalogue (``sha256:<hex>`` of an uploaded image's bytes)."""

    ids: list[str]
    texts: list[str]
    images: list[Image.Image | None]
    image_refs: list[str | None]


def decode_items(
    request: AddItemsRequest, limits: WriteLimits, inputs: tuple[str, ...]
) -> DecodedItems:
    """Check and decode every item of ``request`` (module doc).

    Args:
        inputs: the input modalities the bundle's model reads (``"image"``, ``"text"``).
    """
    decoded = DecodedItems([], [], [], [])
    positions: dict[str, int] = {}
    for position, item in enumerate(request.items):
        where = f"items.{position}"
        if item.item in positions:
            raise RequestError(
                f"{where}.item",
                f"{item.item!r} is also item {positions[item.item]} of this request; send each "
                "raw id once",
            )
        positions[item.item] = position
        for modality in ("text", "image"):
            if getattr(item, modality) is not None and modality not in inputs:
                raise RequestError(
                    f"{where}.{modality}",
                    f"this bundle's model reads {' and '.join(inputs)} only; remove {modality}",
                )
        text = item.text or ""
        if len(text) > limits.max_text_chars:
            raise RequestError(
                f"{where}.text",
                f"{len(text)} characters, over the limit of {limits.max_text_chars}; shorten it "
                "(or start the server with a larger --max-text-chars)",
            )
        image, ref = (None, None) if item.image is None else _image(item.image, where, limits)
        if not text.strip() and image is None:
            wanted = " or ".join(f"a non-empty {m}" for m in inputs)
            raise RequestError(where, f"item {item.item!r} has no content; give it {wanted}")
        decoded.ids.append(item.item)
        decoded.texts.append(text)
        decoded.images.append(image)
        decoded.image_refs.append(ref)
    return decoded


def _image(encoded: str, where: str, limits: WriteLimits) -> tuple[Image.Image, str]:
    """The RGB image of a base64 string and its reference; :class:`RequestError` otherwise."""
    field = f"{where}.image"
    if len(encoded) > 4 * (limits.max_image_bytes // 3 + 1) + 4:  # decoded it could not fit
        raise _too_large(field, len(encoded) * 3 // 4, limits)
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(
            field, "not valid base64; send the image file's bytes base64-encoded (RFC 4648)"
        ) from None
    if len(data) > limits.max_image_bytes:
        raise _too_large(field, len(data), limits)
    undecodable = RequestError(
        field, "not an image Pillow can decode; send a JPEG, PNG or WebP file's bytes"
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_image_pixels:
                raise RequestError(
                    field,
                    f"{width} x {height} pixels, over the limit of {limits.max_image_pixels}; "
                    "send a smaller image",
                )
            image = image.convert("RGB")  # decodes every pixel: a truncated file fails here
    except RequestError:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ):
        raise undecodable from None
    return image, "sha256:" + hashlib.sha256(data).hexdigest()[:32]


def _too_large(field: str, size: int, limits: WriteLimits) -> RequestError:
    return RequestError(
        field,
        f"{size} bytes, over the limit of {limits.max_image_bytes}; send a smaller image "
        "(resize or recompress it), or start the server with a larger --max-image-bytes",
        status=413,
    )

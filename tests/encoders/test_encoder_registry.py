"""Encoder registry: spec parsing, known names, options, registration checks, two-tower specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmmrec import encoders
from lmmrec.encoders.registry import register
from lmmrec.errors import ConfigError


def test_builtin_names_are_listed() -> None:
    assert {"sbert", "cnn", "clip", "pair", "dual", "vlmo"} <= set(encoders.names())


def test_spec_parsing() -> None:
    assert encoders.parse_spec("clip:/models/a:b") == ("clip", "/models/a:b")
    assert encoders.parse_spec(" sbert ") == ("sbert", None)
    for bad in ("", ":x", "clip:"):
        with pytest.raises(ConfigError, match="bad encoder spec"):
            encoders.parse_spec(bad)


def test_unknown_encoder_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown encoder 'resnet'.*clip, cnn, dual"):
        encoders.build("resnet:default")


def test_unknown_option_lists_valid_ones(sbert_folder: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown options \['dim'\]; valid options: template"):
        encoders.build(f"sbert:{sbert_folder}", dim=3)


def test_register_refuses_bad_classes() -> None:
    class Nameless(encoders.ItemEncoder):
        name = "Bad Name"

    with pytest.raises(ValueError, match="lower-case"):
        register(Nameless)
    clip = encoders.get("clip")

    class Impostor(clip):
        name = "clip"

    with pytest.raises(ValueError, match="already registered"):
        register(Impostor)


def test_two_tower_specs(sbert_folder: Path, vit_folder: Path) -> None:
    with pytest.raises(ConfigError, match="<image spec>\\+<text spec>"):
        encoders.build(f"pair:cnn:{vit_folder}")
    with pytest.raises(ConfigError, match="cannot be the image tower"):
        encoders.build(f"pair:sbert:{sbert_folder}+sbert:{sbert_folder}")
    dual = encoders.build(f"dual:cnn:{vit_folder}+sbert:{sbert_folder}", dim=8, seed=1)
    assert dual.output_dims() == {"image": 8, "text": 8, "fused": 8}
    assert dual.describe()["text_encoder"] == f"sbert:{sbert_folder}"
    with pytest.raises(ConfigError, match="positive"):
        encoders.build(f"dual:cnn:{vit_folder}+sbert:{sbert_folder}", dim=0)

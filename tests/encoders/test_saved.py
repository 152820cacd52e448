"""Encoder persistence: ``save(folder)`` and ``load_encoder`` keep LoRA adapters, trained heads
and the contrastive temperature (same outputs), refuse pickles and altered folders with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from lmmrec.encoders import ItemBatch, ItemEncoder, build, is_saved_encoder, load_encoder
from lmmrec.encoders.saved import MANIFEST, TENSORS
from lmmrec.errors import ConfigError

# case -> spec template, build options, strategies applied in order
CASES = {
    "dual-lora": ("dual:cnn:{vit}+sbert:{sbert}", {"dim": 8, "seed": 3}, ["lora:2"]),
    "dual-top-then-lora": ("dual:cnn:{vit}+sbert:{sbert}", {"dim": 8}, ["top:1", "lora:2"]),
    "clip-top": ("clip:{clip}", {"normalize": True}, ["top:1"]),
    "clip-lora": ("clip:{clip}", {}, ["lora:4"]),
    "vlmo-lora": ("vlmo:{vlmo}", {"pretraining_heads": True}, ["lora:2"]),
    "vlmo-projection": ("vlmo:{vlmo}", {}, ["projection"]),
}


@pytest.fixture
def spec_of(clip_folder: Path, sbert_folder: Path, vit_folder: Path, shop_vlmo_checkpoint: Path):
    folders = {"clip": clip_folder, "sbert": sbert_folder, "vit": vit_folder}
    return lambda case: CASES[case][0].format(vlmo=shop_vlmo_checkpoint, **folders)


def _inputs(encoder: ItemEncoder) -> dict[str, torch.Tensor]:
    images = [Image.new("RGB", (40, 30), (200, 30, 30)), Image.new("RGB", (30, 30), (20, 40, 200))]
    return encoder.preprocess(ItemBatch(texts=["the red bottle", "a blue box"], images=images))


def _train_a_little(encoder: ItemEncoder, strategies: list[str]) -> None:
    """Apply the strategies and move every trainable tensor (and the temperature) by noise."""
    torch.manual_seed(1)
    for strategy in strategies:
        encoder.apply_strategy(strategy)
    scale = encoder.contrastive_scale()
    encoder.mark_tuned([scale])
    with torch.no_grad():
        for parameter in encoder.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
        scale.add_(0.5)


@pytest.mark.parametrize("case", CASES)
def test_round_trip_keeps_adapters_heads_and_temperature(case, spec_of, tmp_path) -> None:
    _, options, strategies = CASES[case]
    encoder = build(spec_of(case), **options)
    base = {m: v.clone() for m, v in encoder(_inputs(encoder)).items()}
    _train_a_little(encoder, strategies)
    with torch.no_grad():
        want = encoder(_inputs(encoder))
    assert not torch.allclose(want["text"], base["text"])  # the adapters / heads count
    folder = encoder.save(tmp_path / "saved", lineage={"note": case})
    assert is_saved_encoder(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["spec"] == spec_of(case) and manifest["options"] == options
    assert manifest["strategy"] == strategies[-1]
    assert manifest["lineage"]["note"] == case
    assert manifest["lineage"]["base_weights_hash"] == encoder.base_weights_hash

    loaded = load_encoder(folder)
    assert not loaded.training
    with torch.no_grad():
        got = loaded(_inputs(loaded))
    for modality, vectors in want.items():
        torch.testing.assert_close(got[modality], vectors, rtol=0, atol=0)
    torch.testing.assert_close(loaded.contrastive_scale(), encoder.contrastive_scale())
    assert loaded.lora_rank == encoder.lora_rank
    assert loaded.describe()["weights_hash"] == encoder.describe()["weights_hash"]
    lineage = loaded.describe()["lineage"]
    assert lineage["checkpoint_hash"] == manifest["tensors"]["sha256"]
    # saving the loaded encoder again writes the same tensors
    again = loaded.save(tmp_path / "again")
    assert json.loads((again / MANIFEST).read_text())["tensors"] == manifest["tensors"]


def test_only_trained_tensors_are_saved(spec_of, tmp_path) -> None:
    encoder = build(spec_of("dual-lora"), dim=8)
    encoder.apply_strategy("lora:2")
    folder = encoder.save(tmp_path / "dual")
    from safetensors.torch import load_file

    names = set(load_file(folder / TENSORS))
    trained = {n for n, p in encoder.named_parameters() if p.requires_grad}
    buffers = {n for n, _ in encoder.named_buffers()}
    assert trained <= names <= trained | buffers
    assert any("lora_A" in n for n in names) and "image_head.weight" in names
    assert not any(n.endswith("base_layer.weight") for n in names)  # frozen base weights stay out


def test_load_by_spec_and_folder_errors(spec_of, tmp_path) -> None:
    assert load_encoder(spec_of("dual-lora"), dim=8).output_dims()["fused"] == 8
    (tmp_path / "plain").mkdir()
    with pytest.raises(ConfigError, match="not a saved encoder"):
        load_encoder(tmp_path / "plain")
    with pytest.raises(ConfigError, match="does not exist"):
        load_encoder(str(tmp_path / "absent"))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a saved encoder; choose"):
        build(spec_of("dual-lora"), dim=8).save(tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"  # never replaced


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.write_text, (self.marker, "executed"))


def test_pickled_tensors_are_refused_in_one_line(spec_of, tmp_path) -> None:
    encoder = build(spec_of("dual-lora"), dim=8)
    encoder.apply_strategy("projection")
    folder = encoder.save(tmp_path / "dual")
    marker = tmp_path / "marker"
    torch.save({"image_head.weight": _Payload(marker)}, folder / TENSORS)
    with pytest.raises(ConfigError, match="pickled Python objects") as error:
        load_encoder(folder)
    assert "\n" not in str(error.value) and not marker.exists()
    (folder / TENSORS).write_bytes(b"\x80\x04junk")  # a bare pickle stream
    with pytest.raises(ConfigError, match="pickled"):
        load_encoder(folder)


def test_altered_or_damaged_folders_are_refused(spec_of, tmp_path) -> None:
    encoder = build(spec_of("dual-lora"), dim=8)
    encoder.apply_strategy("projection")
    folder = encoder.save(tmp_path / "dual")
    manifest = json.loads((folder / MANIFEST).read_text())

    (folder / MANIFEST).write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_encoder(folder)
    (folder / MANIFEST).write_text(json.dumps(manifest | {"version": 99}))
    with pytest.raises(ConfigError, match="version 99"):
        load_encoder(folder)
    (folder / MANIFEST).write_text(json.dumps(manifest | {"weights_hash": "0" * 16}))
    with pytest.raises(ConfigError, match="differ from those saved"):
        load_encoder(folder)
    # base weights behind the spec changed since saving
    changed = manifest | {"weights_hash": "0" * 16}
    changed["lineage"] = manifest["lineage"] | {"base_weights_hash": "f" * 16}
    (folder / MANIFEST).write_text(json.dumps(changed))
    with pytest.raises(ConfigError, match="base weights"):
        load_encoder(folder)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    data = bytearray((folder / TENSORS).read_bytes())
    data[-1] ^= 0xFF
    (folder / TENSORS).write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="changed after it was saved"):
        load_encoder(folder)
    (folder / TENSORS).unlink()
    with pytest.raises(ConfigError, match="is missing"):
        load_encoder(folder)


def test_a_retired_trusted_option_in_an_old_folder_is_dropped(spec_of, tmp_path) -> None:
    encoder = build(spec_of("vlmo-projection"))
    encoder.apply_strategy("projection")
    folder = encoder.save(tmp_path / "vlmo")
    manifest = json.loads((folder / MANIFEST).read_text())  # as an older version wrote it
    manifest["options"]["trusted"] = True
    (folder / MANIFEST).write_text(json.dumps(manifest))
    seen = {}
    import lmmrec.encoders.saved as saved

    real_build = saved.build

    def spy(spec, **options):  # type: ignore[no-untyped-def]
        seen.update(options)
        return real_build(spec, **options)

    saved.build = spy
    try:
        load_encoder(folder)
    finally:
        saved.build = real_build
    assert "trusted" not in seen

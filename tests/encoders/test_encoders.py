"""Contract suite every encoder passes (tiny random models loaded through the real loaders):
shapes, determinism, describe(), picklable preprocessing, and each training strategy's trainable
set and gradients."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image

from lmmrec import encoders
from lmmrec.encoders import ItemBatch, ItemEncoder
from lmmrec.errors import ConfigError

# case -> spec template over the fixture folders, and the strategies it cannot take
CASES = {
    "clip": ("clip:{clip}", set()),
    "sbert": ("sbert:{sbert}", {"projection"}),
    "cnn-vit": ("cnn:{vit}", {"projection"}),
    "cnn-resnet": ("cnn:{resnet}", {"projection", "lora:2"}),
    "pair": ("pair:cnn:{vit}+sbert:{sbert}", {"projection"}),
    "dual": ("dual:cnn:{resnet}+sbert:{sbert}", set()),
}
STRATEGIES = ["frozen", "projection", "top:1", "lora:2", "full"]
UNUSED = {"model.logit_scale"}  # CLIP's temperature: part of the model, not of its features


@pytest.fixture
def spec_of(clip_folder: Path, sbert_folder: Path, vit_folder: Path, resnet_folder: Path):
    folders = {
        "clip": clip_folder,
        "sbert": sbert_folder,
        "vit": vit_folder,
        "resnet": resnet_folder,
    }
    return lambda case: CASES[case][0].format(**folders)


def _items(images: list[Image.Image]) -> ItemBatch:
    texts = ["the red bottle", "a blue box made of glass", "", "green hat by the lamp"]
    return ItemBatch(texts=texts, images=[images[0], None, images[2], images[3]])


def _inputs(encoder: ItemEncoder, images: list[Image.Image]) -> dict[str, torch.Tensor]:
    return encoder.preprocess(_items(images))


@pytest.mark.parametrize("case", CASES)
def test_outputs_have_declared_shapes_and_are_deterministic(case, spec_of, images) -> None:
    encoder = encoders.build(spec_of(case))
    assert not encoder.training  # built in eval mode
    with torch.no_grad():
        out = encoder(_inputs(encoder, images))
        again = encoders.build(spec_of(case))(_inputs(encoder, images))
    assert {m: tuple(v.shape) for m, v in out.items()} == {
        m: (4, d) for m, d in encoder.output_dims().items()
    }
    for modality, vectors in out.items():
        assert torch.isfinite(vectors).all()
        torch.testing.assert_close(again[modality], vectors, rtol=0, atol=0)


@pytest.mark.parametrize("case", CASES)
def test_forward_computes_only_the_modalities_given(case, spec_of, images) -> None:
    encoder = encoders.build(spec_of(case))
    for modality in encoder.preprocessor.modalities:
        items = ItemBatch(**{f"{modality}s": getattr(_items(images), f"{modality}s")})
        with torch.no_grad():
            assert set(encoder(encoder.preprocess(items))) == {modality}


@pytest.mark.parametrize("case", CASES)
def test_describe_and_picklable_preprocessing(case, spec_of) -> None:
    encoder = encoders.build(spec_of(case))
    description = encoder.describe()
    assert description["spec"] == spec_of(case)
    assert description["dims"] == encoder.output_dims()
    assert set(description["preprocessing"]) == set(encoder.preprocessor.modalities)
    assert len(description["weights_hash"]) == 16
    if "text" in description["preprocessing"]:
        text = description["preprocessing"]["text"]
        assert text["template"] == "{text}" and text["truncation"]["unit"] == "tokens"
    pickle.dumps(encoder.preprocessor)
    with torch.no_grad():
        next(encoder.parameters()).add_(1.0)
    assert encoder.describe()["weights_hash"] != description["weights_hash"]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("case", CASES)
def test_strategy_trains_exactly_its_parameters(case, strategy, spec_of, images) -> None:
    encoder = encoders.build(spec_of(case))
    if strategy in CASES[case][1]:
        with pytest.raises(ConfigError):
            encoder.apply_strategy(strategy)
        return
    trainable = encoder.apply_strategy(strategy)
    names = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert {id(p) for p in trainable} == {id(p) for p in encoder.parameters() if p.requires_grad}
    out = encoder(_inputs(encoder, images))
    if strategy == "frozen":
        assert not trainable and not any(v.requires_grad for v in out.values())
        return
    sum(v.square().sum() for v in out.values()).backward()
    with_grad = {n for n, p in encoder.named_parameters() if p.grad is not None}
    assert with_grad == names - UNUSED
    # LoRA's A gets a zero gradient at first: B starts at zero
    nonzero = {n for n in with_grad if "lora_A" not in n}
    assert all(p.grad.abs().sum() > 0 for n, p in encoder.named_parameters() if n in nonzero)
    layout = encoder.layout()
    projection_ids = {id(p) for m in layout.projections for p in m.parameters()}
    by_id = {id(p): n for n, p in encoder.named_parameters()}
    projections = {by_id[i] for i in projection_ids}
    if strategy == "projection":
        assert names == projections
    if strategy == "lora:2":  # LoRA adds only adapter matrices to the projection heads
        assert names - projections and all("lora_" in n for n in names - projections)
        assert all(("lora_A" in n) or ("lora_B" in n) for n in names - projections)
    if strategy == "top:1":
        for layers in layout.towers.values():
            top = {id(p) for p in layers[-1].parameters()}
            below = {id(p) for layer in layers[:-1] for p in layer.parameters()}
            assert top <= {id(p) for p in trainable} and not below & {id(p) for p in trainable}
    if strategy == "full":
        assert names == {n for n, _ in encoder.named_parameters()}


def test_strategy_names_are_validated(spec_of) -> None:
    encoder = encoders.build(spec_of("clip"))
    for bad in ("lora", "top:0", "top:x", "partial", "lora:-1", "full:2"):
        with pytest.raises(ConfigError, match="strategy"):
            encoder.apply_strategy(bad)
    encoder.apply_strategy("full")
    with pytest.raises(ConfigError, match="only 2 layers"):
        encoder.apply_strategy("top:3")
    assert all(p.requires_grad for p in encoder.parameters())  # a refused strategy changes nothing


def test_lora_is_injected_once_and_starts_as_identity(spec_of, images) -> None:
    encoder = encoders.build(spec_of("clip"))
    inputs = _inputs(encoder, images)
    with torch.no_grad():
        before = encoder(inputs)
    encoder.apply_strategy("lora:2")
    n_params = sum(1 for _ in encoder.parameters())
    encoder.apply_strategy("frozen")
    encoder.apply_strategy("lora:2")
    assert sum(1 for _ in encoder.parameters()) == n_params
    with torch.no_grad():
        after = encoder(inputs)
    for modality, vectors in before.items():
        torch.testing.assert_close(after[modality], vectors)
    assert encoder.describe()["lora_rank"] == 2
    with pytest.raises(ConfigError, match="rank-2"):
        encoder.apply_strategy("lora:4")


def test_fused_vector_uses_only_present_modalities(spec_of, images) -> None:
    encoder = encoders.build(spec_of("dual"))
    with torch.no_grad():
        out = encoder(_inputs(encoder, images))
    # item 1 has no image: its fused vector is its (normalised) text vector
    torch.testing.assert_close(out["fused"][1], out["text"][1])
    expected = torch.nn.functional.normalize(out["image"][0] + out["text"][0], dim=0)
    torch.testing.assert_close(out["fused"][0], expected)

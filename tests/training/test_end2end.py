"""End-to-end training: gradients reach the encoder, the bank, equivalence with frozen, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_towers import TINY_DUAL

from lmmrec.data.dataset import Dataset
from lmmrec.data.splits import TEST
from lmmrec.encoders import build, extract_features
from lmmrec.encoders.objectives import contrastive_loss
from lmmrec.errors import ConfigError, FeatureError
from lmmrec.training import RunConfig, TrainConfig, Trainer, train
from lmmrec.training.end2end import EndToEnd, FeatureBank
from lmmrec.training.run import build_step
from planted import with_cold_items


def _config(tmp_path: Path, model: str = "vbpr", **encoder: object) -> RunConfig:
    section = {"spec": TINY_DUAL, "options": {"dim": 8}, "strategy": "full", "lr": 1e-3}
    return RunConfig(
        model=model,
        paradigm="end2end",
        encoder={**section, **encoder},
        output_dir=str(tmp_path / "runs"),
        name="e2e",
        train=TrainConfig(epochs=3, batch_size=64, lr=0.01, ks=[5, 10], patience=10),
    )


def _one_step(step: EndToEnd, dataset: Dataset) -> Trainer:
    trainer = Trainer(step, dataset, TrainConfig(batch_size=64, lr=0.01, ks=[5]))
    batch = next(trainer.sampler.epoch(64, trainer.rng))
    trainer.optimizer.zero_grad()
    trainer.module(batch).backward()
    trainer.optimizer.step()
    return trainer


@pytest.mark.parametrize(
    ("strategy", "trains"),
    [
        ("projection", ("image_head", "text_head")),
        ("top:1", ("image_head", "text_head", "layers.1.", "norm")),
        ("lora:2", ("image_head", "text_head", "lora_")),
    ],
)
def test_one_step_changes_exactly_the_trainable_encoder_parameters(
    content: Dataset, tmp_path: Path, strategy: str, trains: tuple[str, ...]
) -> None:
    step = build_step(content, _config(tmp_path, strategy=strategy))
    before = {n: p.detach().clone() for n, p in step.encoder.named_parameters()}
    _one_step(step, content)
    for name, parameter in step.encoder.named_parameters():
        should_train = any(part in name for part in trains) and (
            strategy != "lora:2" or "lora_" in name or "head" in name
        )
        assert parameter.requires_grad == should_train, name
        if should_train and "lora_A" in name:  # LoRA's B starts at zero: A's first grad is 0
            assert parameter.grad is not None, name
        elif should_train:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
            assert not torch.equal(parameter, before[name]), name
        else:
            assert parameter.grad is None, name
            assert torch.equal(parameter, before[name]), name


@pytest.mark.parametrize("model", ["vbpr", "freedom", "lattice", "bm3", "mmgcn"])
def test_every_recommender_trains_its_encoder_end_to_end(
    content: Dataset, tmp_path: Path, model: str
) -> None:
    step = build_step(content, _config(tmp_path, model=model, strategy="projection"))
    head = step.encoder.image_head.weight
    before = head.detach().clone()
    _one_step(step, content)
    assert head.grad is not None and head.grad.abs().sum() > 0
    assert not torch.equal(head, before)


def test_a_step_encodes_each_distinct_item_of_the_batch_once(
    content: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = build_step(content, _config(tmp_path, chunk_size=7))
    encoded: list[int] = []
    forward = type(step.encoder).forward
    monkeypatch.setattr(
        type(step.encoder),
        "forward",
        lambda self, inputs: encoded.append(len(inputs["input_ids"])) or forward(self, inputs),
    )
    trainer = Trainer(step, content, TrainConfig(batch_size=64, ks=[5]))
    batch = next(trainer.sampler.epoch(64, trainer.rng))
    trainer.module(batch)
    distinct = len(torch.unique(torch.cat([batch.pos_items, batch.neg_items])))
    assert sum(encoded) == distinct and max(encoded) <= 7  # chunks bound the peak memory


def test_the_bank_view_carries_gradients_for_the_batch_rows_only() -> None:
    bank = FeatureBank({"image": torch.zeros(5, 2)})
    fresh = torch.ones(2, 2, requires_grad=True)
    view = bank.view(torch.tensor([1, 3]), {"image": fresh})["image"]
    assert torch.equal(view[[1, 3]], torch.ones(2, 2)) and torch.equal(
        bank.image, torch.zeros(5, 2)
    )
    view.sum().backward()
    assert torch.equal(fresh.grad, torch.ones(2, 2))


def test_with_a_still_encoder_end_to_end_reproduces_the_frozen_run(
    content: Dataset, tmp_path: Path
) -> None:
    """Encoder lr 0, dropout off, the bank refreshed every step: the paradigms differ only in
    where the features come from, so the losses are those of the frozen run on the same
    encoder's stored features."""
    torch.manual_seed(2022)  # the end-to-end run seeds before building its encoder
    encoder = build(TINY_DUAL, dim=8)
    extract_features(
        content, encoder, name="tiny", modalities=["image", "text"], num_workers=0, progress=False
    )
    frozen = RunConfig(
        model="vbpr",
        features="tiny",
        output_dir=str(tmp_path / "runs"),
        name="frozen",
        train=TrainConfig(epochs=3, batch_size=64, lr=0.01, ks=[5, 10]),
    )
    end2end = _config(tmp_path, strategy="full", lr=0.0, refresh="step")
    a = train(frozen, dataset=content).fit
    b = train(end2end, dataset=content).fit
    torch.testing.assert_close(
        [r["loss"] for r in b.history], [r["loss"] for r in a.history], rtol=1e-5, atol=1e-6
    )
    assert b.valid == pytest.approx(a.valid, abs=1e-6)


def test_an_interrupted_end_to_end_run_resumes_to_the_same_result(
    content: Dataset, tmp_path: Path
) -> None:
    settings = {"checkpoint_every_epochs": 1, "checkpoint_every_seconds": 0}
    config = _config(tmp_path / "a", strategy="lora:2")
    config.train = config.train.model_copy(update=settings)
    straight = train(config, dataset=content).fit

    def interrupt(trainer: Trainer, record: dict[str, object]) -> None:
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    again = config.model_copy(update={"output_dir": str(tmp_path / "b")})
    with pytest.raises(KeyboardInterrupt):
        train(again, dataset=content, callbacks=[interrupt])
    resumed = train(again, dataset=content).fit
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]
    assert resumed.test == straight.test


def test_the_encoder_has_its_own_parameter_group(content: Dataset, tmp_path: Path) -> None:
    step = build_step(content, _config(tmp_path, strategy="projection", lr=3e-4, warmup_epochs=2))
    groups = Trainer(step, content, TrainConfig(lr=0.01, ks=[5])).optimizer.param_groups
    recommender, encoder = groups
    assert recommender["lr"] == 0.01
    assert encoder["warmup_epochs"] == 2 and encoder["lr"] == pytest.approx(3e-4 / 3)
    heads = {id(step.encoder.image_head.weight), id(step.encoder.text_head.weight)}
    assert {id(p) for p in encoder["params"]} == heads


def test_end_to_end_needs_an_encoder_section_and_a_catalog(
    tiny_dataset: Dataset, content: Dataset, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="needs an encoder section"):
        RunConfig(model="vbpr", paradigm="end2end")
    with pytest.raises(FeatureError, match="no item catalogue"):
        build_step(tiny_dataset, _config(tmp_path))
    with pytest.raises(ConfigError, match="makes no"):
        build_step(content, _config(tmp_path, modalities=["audio"]))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_end_to_end_trains_its_encoder_on_cuda_in_bf16(content: Dataset, tmp_path: Path) -> None:
    config = _config(tmp_path, strategy="lora:2", activation_checkpointing=True)
    config.train = config.train.model_copy(update={"device": "cuda", "precision": "bf16"})
    step = build_step(content, config)
    assert step.bank.image.device.type == "cpu"  # built on the CPU, moved by the trainer
    trainer = Trainer(step, content, config.train)
    assert trainer.runtime.bf16 and step.encoding.inputs.pixel_values.device.type == "cuda"
    lora = [p for n, p in step.encoder.named_parameters() if "lora_B" in n]
    before = [p.detach().clone() for p in lora]
    result = trainer.fit()
    assert result.valid["recall@10"] > 0
    assert any(not torch.equal(p, b) for p, b in zip(lora, before, strict=True))


def test_the_alignment_loss_adds_itc_over_the_batch_items_with_both_modalities(
    content: Dataset, tmp_path: Path
) -> None:
    step = build_step(content, _config(tmp_path, strategy="projection", align_weight=0.5))
    trainer = Trainer(step, content, TrainConfig(batch_size=64, ks=[5]))
    batch = next(trainer.sampler.epoch(64, trainer.rng))
    items = torch.unique(torch.cat([batch.pos_items, batch.neg_items]))
    fresh = step.encoding(items)
    both = (items != 5) & (items != 6)  # item 5 has no image, item 6 no text
    scale = step.encoder.contrastive_scale()
    expected = step.recommender.loss(batch, step.bank.view(items, fresh))
    expected = (
        expected + 0.5 * contrastive_loss(fresh["image"][both], fresh["text"][both], scale)[0]
    )
    loss = step(batch)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert scale.grad is not None and scale.grad.abs() > 0  # the temperature learns too
    assert any(scale is p for g in trainer.optimizer.param_groups for p in g["params"])


def test_end_to_end_starts_from_a_saved_fine_tuned_encoder(
    content: Dataset, tmp_path: Path
) -> None:
    torch.manual_seed(2022)  # the tiny towers' base weights are random: the run's seed
    encoder = build(TINY_DUAL, dim=8)
    encoder.apply_strategy("projection")
    with torch.no_grad():
        encoder.image_head.weight.mul_(2.0)  # as if fine-tuned
    encoder.save(tmp_path / "tuned")
    step = build_step(content, _config(tmp_path, spec=str(tmp_path / "tuned"), strategy="top:1"))
    torch.testing.assert_close(step.encoder.image_head.weight, encoder.image_head.weight)


def test_frozen_towers_are_taken_from_features_they_made(
    content: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(2022)  # the towers the end-to-end run builds under its seed
    pair = build("pair:tinyimage+tinytext")
    stored = extract_features(content, pair, name="towers", num_workers=0, progress=False)
    content.add_feature_set(stored)

    def no_towers(self: object, inputs: object) -> None:
        raise AssertionError("the towers ran although their vectors were stored")

    monkeypatch.setattr(type(build(TINY_DUAL, dim=8)), "towers", no_towers)
    step = build_step(content, _config(tmp_path, strategy="projection"))
    cache = step.encoding.tower_cache
    assert cache is not None
    assert step.encoding.input_keys == ["image_present", "text_present"]  # no image decoded
    for modality in ("image", "text"):
        torch.testing.assert_close(
            getattr(cache, modality), torch.from_numpy(stored.arrays[modality])
        )


def test_extraction_projects_stored_tower_vectors_as_the_encoder_would(
    content: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    dual = build(TINY_DUAL, dim=8)
    outputs = {"modalities": ["image", "text", "fused"], "num_workers": 0, "progress": False}
    full = extract_features(content, dual, name="full", **outputs)
    towers = extract_features(content, dual.towers_encoder(), name="towers", num_workers=0)
    monkeypatch.setattr(type(dual), "forward", lambda self, inputs: 1 / 0)  # must not run
    shortcut = extract_features(content, dual, name="shortcut", **outputs)
    assert shortcut.manifest["timing"]["encoded_items"] == content.n_items
    for modality in ("image", "text", "fused"):
        np.testing.assert_allclose(
            shortcut.arrays[modality], full.arrays[modality], rtol=1e-5, atol=1e-6
        )
    assert shortcut.manifest["missing"] == full.manifest["missing"]
    assert towers.name == "towers"


def test_end_to_end_pools_encode_the_catalogue_once_and_place_new_items_from_content(
    content: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = with_cold_items(content, [0, 5, 10], to=TEST)
    step = build_step(dataset, _config(tmp_path, strategy="projection"))
    trainer = Trainer(step, dataset, TrainConfig(batch_size=64, lr=0.01, ks=[5]))
    trainer.train_epoch()
    calls = []
    encode_all = step.encoding.encode_all
    monkeypatch.setattr(step.encoding, "encode_all", lambda: calls.append(1) or encode_all())
    results = trainer.evaluate_pools("test")
    assert len(calls) == 1
    assert [(r.pool, r.scored_by, r.n_items) for r in results][-3:] == [
        ("cold", "learned", 3),
        ("cold", "content", 3),
        ("cold", "mapped", 3),
    ]

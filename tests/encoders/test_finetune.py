"""Fine-tuning: the shared contrastive loss and retrieval metric, the loop on a tiny shop (dual
improves held-out retrieval, VLMo's ITC + ITM + MLM loss falls), exact resume, skipped items,
the config, and ``lmmrec finetune`` / ``lmmrec encode`` with a fine-tuned folder."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lmmrec.cli import app
from lmmrec.data.catalog import ItemCatalog
from lmmrec.data.dataset import Dataset
from lmmrec.encoders import (
    FinetuneConfig,
    build,
    finetune,
    finetune_config,
    load_encoder,
)
from lmmrec.encoders.finetune import evaluate_retrieval, lr_factor, training_pairs
from lmmrec.encoders.objectives import (
    MAX_LOGIT_SCALE,
    contrastive_loss,
    retrieval_recall,
    symmetric_contrastive_loss,
)
from lmmrec.encoders.saved import MANIFEST
from lmmrec.errors import ConfigError, DataError

FAST = {"device": "cpu", "batch_size": 16, "holdout": 0.3, "num_workers": 0}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices are faster on one thread, and the shared machine's cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def dual_spec(vit_folder: Path, shop_sbert_folder: Path) -> str:
    return f"dual:cnn:{vit_folder}+sbert:{shop_sbert_folder}"


# -- objectives ------------------------------------------------------------------------------


def test_retrieval_recall_by_hand() -> None:
    # three pairs; image 0 is nearest text 0, image 1 nearest text 2, image 2 nearest text 1
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.2]])
    text = torch.tensor([[1.0, 0.1], [-1.0, 0.0], [0.1, 1.0]])
    metrics = retrieval_recall(image, text, ks=(1, 2))
    # i2t ranks: image0 -> text0 first (rank 0); image1: sims t0 .1, t1 0, t2 1 -> t1 rank 2;
    # image2: t0 -.98, t1 1, t2 .1 -> t2 rank 1
    assert metrics["i2t@1"] == pytest.approx(1 / 3) and metrics["i2t@2"] == pytest.approx(2 / 3)
    sim = torch.nn.functional.normalize(image) @ torch.nn.functional.normalize(text).t()
    t2i = [int((sim[:, j] >= sim[j, j]).sum()) - 1 for j in range(3)]
    assert metrics["t2i@1"] == pytest.approx(np.mean([r < 1 for r in t2i]))
    assert metrics["mean_recall"] == pytest.approx(
        np.mean([v for k, v in metrics.items() if "@" in k])
    )
    same = torch.ones(4, 3)  # every pair tied: ties count against the pair
    assert retrieval_recall(same, same, ks=(1, 3))["mean_recall"] == 0.0
    torch.manual_seed(0)
    a, b = torch.randn(50, 8), torch.randn(50, 8)
    assert retrieval_recall(a, b, block=7) == retrieval_recall(a, b, block=4096)


def test_contrastive_loss_matches_clip(clip_folder: Path) -> None:
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(clip_folder).eval()
    torch.manual_seed(0)
    pixels, ids = torch.randn(4, 3, 32, 32), torch.randint(0, 80, (4, 7))
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels, return_loss=True)
        image = model.get_image_features(pixel_values=pixels).pooler_output
        text = model.get_text_features(input_ids=ids).pooler_output
        loss, logits = contrastive_loss(image, text, model.logit_scale)
    torch.testing.assert_close(loss, out.loss)
    torch.testing.assert_close(logits, out.logits_per_image)
    # the temperature is clamped at 100
    high = torch.tensor(10.0, requires_grad=True)
    loss, logits = contrastive_loss(image, text, high)
    ref, _ = symmetric_contrastive_loss(
        torch.nn.functional.normalize(image),
        torch.nn.functional.normalize(text),
        torch.tensor(100.0),
    )
    torch.testing.assert_close(loss, ref)
    assert math.isclose(MAX_LOGIT_SCALE, math.log(100))


def test_lr_schedule() -> None:
    factors = [lr_factor(s, 2, 10) for s in range(10)]
    assert factors[:2] == [0.5, 1.0] and factors[2] == 1.0
    assert all(a >= b for a, b in itertools.pairwise(factors[1:]))
    assert lr_factor(10, 2, 10) == pytest.approx(0.0)


# -- the config ------------------------------------------------------------------------------


def test_config_rejects_unknown_keys_and_bad_values() -> None:
    assert (
        finetune_config(overrides=["strategy=lora:8", "lr=1e-3", "epochs=2"]).strategy == "lora:8"
    )
    with pytest.raises(ConfigError, match="learning_rate"):
        finetune_config(overrides=["learning_rate=1"])
    with pytest.raises(ConfigError, match="frozen"):
        finetune_config({"strategy": "frozen"})
    with pytest.raises(ConfigError, match="unknown training strategy"):
        finetune_config({"strategy": "lora:x"})
    with pytest.raises(ConfigError, match="batch_size"):
        finetune_config({"batch_size": 1})


# -- the loop --------------------------------------------------------------------------------


def test_dual_finetuning_improves_held_out_retrieval(
    shop: Dataset, dual_spec: str, tmp_path
) -> None:
    encoder = build(dual_spec, dim=16)
    config = FinetuneConfig(strategy="full", lr=3e-3, epochs=10, **FAST)
    result = finetune(encoder, shop, config, out=tmp_path / "dual", progress=False)
    assert result.after["mean_recall"] > result.before["mean_recall"] + 0.1
    best = result.history[result.best_epoch - 1]
    assert best["mean_recall"] == result.after["mean_recall"]
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    pairs = training_pairs(shop, config)
    assert (
        result.pairs["train"] + result.pairs["holdout"] + result.pairs["skipped"]
        == result.pairs["items"]
    )
    # the saved encoder is the best epoch's: its held-out scores are the reported ones
    loaded = result.encoder()
    again = evaluate_retrieval(loaded, shop, pairs.holdout)
    assert again == pytest.approx(result.after, abs=1e-6)
    lineage = json.loads((tmp_path / "dual" / MANIFEST).read_text())["lineage"]
    assert lineage["finetune"]["epoch"] == result.best_epoch
    assert lineage["finetune"]["config"]["strategy"] == "full"
    assert lineage["finetune"]["after"]["mean_recall"] == result.after["mean_recall"]
    assert "logit_scale" in dict(loaded.named_parameters())  # dual's added temperature


def test_interrupted_finetuning_resumes_to_the_same_result(shop, dual_spec, tmp_path) -> None:
    config = FinetuneConfig(strategy="lora:2", lr=5e-3, epochs=4, patience=10, **FAST)
    whole = finetune(build(dual_spec, dim=8), shop, config, out=tmp_path / "whole", progress=False)

    class Interrupt(Exception):
        pass

    def stop_after_two(state) -> None:  # type: ignore[no-untyped-def]
        if state.epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        finetune(
            build(dual_spec, dim=8),
            shop,
            config,
            out=tmp_path / "cut",
            progress=False,
            on_epoch=stop_after_two,
        )
    resumed = finetune(build(dual_spec, dim=8), shop, config, out=tmp_path / "cut", progress=False)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in whole.history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history] == strip
    assert resumed.after == whole.after and resumed.best_epoch == whole.best_epoch
    first = json.loads((tmp_path / "whole" / MANIFEST).read_text())
    second = json.loads((tmp_path / "cut" / MANIFEST).read_text())
    assert first["weights_hash"] == second["weights_hash"]
    # a finished run is returned as it is; another config is refused
    assert (
        finetune(
            build(dual_spec, dim=8), shop, config, out=tmp_path / "cut", progress=False
        ).history
        == resumed.history
    )
    other = config.model_copy(update={"lr": 1e-3})
    with pytest.raises(ConfigError, match="another fine-tuning run"):
        finetune(build(dual_spec, dim=8), shop, other, out=tmp_path / "cut", progress=False)


def test_missing_modalities_are_skipped_and_counted(shop: Dataset, dual_spec, tmp_path) -> None:
    root = tmp_path / "shop"
    shutil.copytree(shop.root, root)
    data = Dataset.load(root)
    catalog = data.catalog
    in_train = np.flatnonzero(np.diff(data.train.tocsc().indptr) > 0)
    no_image, no_text, both, broken = (int(i) for i in in_train[:4])
    images, texts = list(catalog.images), list(catalog.texts)
    images[no_image] = images[both] = None
    texts[no_text] = texts[both] = "  "
    (root / "broken.png").write_bytes(b"not a png")
    images[broken] = "broken.png"
    data.catalog = ItemCatalog(texts=texts, images=images, root=root)
    config = FinetuneConfig(strategy="projection", lr=1e-3, epochs=1, **FAST)
    pairs = training_pairs(data, config)
    assert {no_image, no_text, both}.isdisjoint(np.concatenate([pairs.train, pairs.holdout]))
    assert pairs.counts == {"items": len(in_train), "no_image": 2, "no_text": 2, "skipped": 3}
    new_items = set(range(data.n_items)) - set(in_train.tolist())
    assert new_items and new_items.isdisjoint(np.concatenate([pairs.train, pairs.holdout]))
    result = finetune(build(dual_spec, dim=8), data, config, out=tmp_path / "out", progress=False)
    assert result.pairs["unreadable_image"] == 1 and result.pairs["skipped"] == 4


def test_vlmo_finetunes_with_itc_itm_and_mlm(shop: Dataset, shop_vlmo_checkpoint, tmp_path) -> None:
    spec = f"vlmo:{shop_vlmo_checkpoint}"
    encoder = build(spec, pretraining_heads=True)
    config = FinetuneConfig(strategy="top:2", lr=2e-3, epochs=4, patience=10, mlm=True, **FAST)
    result = finetune(encoder, shop, config, out=tmp_path / "vlmo", progress=False)
    first, last = result.history[0], result.history[-1]
    assert {"itc", "itm", "mlm"} <= set(first)
    assert last["loss"] < first["loss"] and last["itc"] < first["itc"]
    loaded = load_encoder(tmp_path / "vlmo")
    heads = dict(loaded.model.named_parameters())
    saved = result.encoder()
    torch.testing.assert_close(
        heads["itm_score.fc.weight"], dict(saved.model.named_parameters())["itm_score.fc.weight"]
    )
    base = build(spec, pretraining_heads=True)
    assert not torch.equal(
        heads["itm_score.fc.weight"], dict(base.model.named_parameters())["itm_score.fc.weight"]
    )
    # without the pre-training heads, ITM cannot run: the error says how to get them
    with pytest.raises(ConfigError, match="pretraining_heads=true"):
        finetune(build(spec), shop, config, out=tmp_path / "no-heads", progress=False)


def test_objectives_that_do_not_fit_the_encoder(
    shop: Dataset, dual_spec, sbert_folder, vit_folder, tmp_path
) -> None:
    config = FinetuneConfig(mlm=True, epochs=1, **FAST)
    with pytest.raises(ConfigError, match="VLMo objectives"):
        finetune(build(dual_spec, dim=8), shop, config, out=tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="no image"):
        finetune(
            build(f"sbert:{sbert_folder}"),
            shop,
            FinetuneConfig(strategy="full", **FAST),
            out=tmp_path / "b",
            progress=False,
        )
    pair = f"pair:cnn:{vit_folder}+sbert:{sbert_folder}"
    with pytest.raises(ConfigError, match="no shared image-text space"):
        finetune(build(pair), shop, FinetuneConfig(**FAST), out=tmp_path / "c", progress=False)
    empty = Dataset(**{**shop.__dict__, "catalog": None})
    with pytest.raises(DataError, match="no item catalog"):
        training_pairs(empty, config)


# -- the command line ------------------------------------------------------------------------


def test_cli_finetune_then_encode_records_lineage(shop: Dataset, dual_spec: str, tmp_path) -> None:
    root = tmp_path / "shop"
    shutil.copytree(shop.root, root)
    out = tmp_path / "dual-ft"
    runner = CliRunner()
    args = ["finetune", "--dataset", str(root), "--encoder", dual_spec, "--out", str(out)]
    args += ["--option", "dim=8", "strategy=projection", "lr=1e-2", "epochs=2", "device=cpu"]
    args += ["batch_size=16", "holdout=0.3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "before" in result.output and "after" in result.output and "i2t@1" in result.output
    bad = runner.invoke(app, [*args[:7], "epochz=2"])
    assert isinstance(bad.exception, ConfigError) and "epochz" in str(bad.exception)

    encoded = runner.invoke(
        app, ["encode", "--dataset", str(root), "--encoder", str(out), "--workers", "0"]
    )
    assert encoded.exit_code == 0, encoded.output
    manifest = json.loads((root / "features" / "dual-ft" / "manifest.json").read_text())
    lineage = manifest["lineage"]
    saved = json.loads((out / MANIFEST).read_text())
    assert lineage["base_weights_hash"] == saved["lineage"]["base_weights_hash"]
    assert lineage["checkpoint_hash"] == saved["tensors"]["sha256"]
    assert lineage["finetune"]["config"]["strategy"] == "projection"
    assert manifest["encoder"]["weights_hash"] == saved["weights_hash"]
    assert "adapted from" in "".join(encoded.output.split("\n"))


def test_activation_checkpointing_and_workers_change_nothing(shop, dual_spec, tmp_path) -> None:
    config = FinetuneConfig(strategy="top:1", lr=3e-3, epochs=1, **FAST)
    plain = finetune(build(dual_spec, dim=8), shop, config, out=tmp_path / "a", progress=False)
    other = config.model_copy(update={"activation_checkpointing": True, "num_workers": 1})
    checked = finetune(build(dual_spec, dim=8), shop, other, out=tmp_path / "b", progress=False)
    assert checked.history[0]["loss"] == pytest.approx(plain.history[0]["loss"], rel=1e-5)
    assert checked.after == pytest.approx(plain.after)


def test_projection_trains_the_heads_on_cached_towers(shop, dual_spec, tmp_path) -> None:
    config = FinetuneConfig(strategy="projection", lr=1e-2, epochs=3, **FAST)
    cached = finetune(build(dual_spec, dim=16), shop, config, out=tmp_path / "a", progress=False)
    plain_config = config.model_copy(update={"cache_towers": False})
    plain = finetune(
        build(dual_spec, dim=16), shop, plain_config, out=tmp_path / "b", progress=False
    )
    # the same vectors, from the cache or the towers (batched differently: equal to rounding)
    assert cached.before == pytest.approx(plain.before, abs=1e-6)
    assert cached.after["mean_recall"] > cached.before["mean_recall"]
    # the saved heads give, through the whole encoder, the scores the cache reported
    again = evaluate_retrieval(cached.encoder(), shop, training_pairs(shop, config).holdout)
    assert again == pytest.approx(cached.after, abs=1e-6)

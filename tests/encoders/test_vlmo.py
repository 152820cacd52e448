"""VLMo: parity with the official code, forward modes, expert routing, checkpoints, LoRA, text,
and the ``vlmo`` item encoder.

The parity fixtures (``shared/reference/vlmo-parity``, see its README) hold a tiny state dict with
the official names, inputs, and every intermediate and output the official ``microsoft/unilm``
code produced from them; we must match each float output to 1e-5 and each integer output exactly.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from lmmrec.encoders import ItemBatch, build
from lmmrec.encoders.preprocessing import IMAGE_KEYS, select
from lmmrec.encoders.vlmo import (
    VLMo,
    VLMoConfig,
    VLMoTokenizer,
    config_from_state_dict,
    load_state_dict_into,
    load_vlmo,
    read_checkpoint,
)
from lmmrec.encoders.vlmo import objectives as obj
from lmmrec.encoders.vlmo.checkpoint import geometric_offsets
from lmmrec.encoders.vlmo.model import UnimodalOutput
from lmmrec.errors import ConfigError

PARITY = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "vlmo-parity"
FIXTURES = {"tiny": PARITY, "tiny_plus": PARITY / "base_plus"}
ATOL = RTOL = 1e-5

TINY = {
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_layers": 4,
    "num_heads": 4,
    "vlffn_start_layer_index": 2,
    "vocab_size": 100,
    "max_text_len": 8,
    "drop_path_rate": 0.0,
}
VARIANTS = {
    "relative": VLMoConfig(**TINY),
    "absolute": VLMoConfig(
        **TINY, relative_position_bias=False, abs_pos_embed=True, layer_scale_init_values=None
    ),
}


def _official_outputs(model: VLMo, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our values under the fixture's output names (README "Outputs")."""
    image, ids, mask = inputs["image"], inputs["text_ids"], inputs["text_masks"]
    got: dict[str, torch.Tensor] = {}
    if model.config.relative_position_bias:
        got["index.relative_position_index"] = model.relative_position_index
        got["index.text_relative_position_index"] = model.text_relative_position_index
        got["index.text_imag_relative_position_index"] = model.text_imag_relative_position_index

    def run_image(branch: bool) -> UnimodalOutput:
        return model.forward_image(image, vl_branch=branch, output_hidden_states=True)

    def run_text(branch: bool) -> UnimodalOutput:
        return model.forward_text(ids, mask, vl_branch=branch, output_hidden_states=True)

    passes = {("infer_image", "image_feats"): run_image, ("infer_text", "text_feats"): run_text}
    for (name, feats), run in passes.items():
        out, ft = run(True), run(False)
        got[f"{name}.embeds"] = out.embeds
        got[f"{name}.hidden_states"] = torch.stack(out.hidden_states)
        got[f"{name}.vlffn_hidden_states"] = torch.stack(out.vlffn_hidden_states)
        for prefix, result in ((name, out), (f"{name}_ft", ft)):
            got[f"{prefix}.{feats}"] = result.feats
            got[f"{prefix}.cls_feats"] = result.cls_feats
            got[f"{prefix}.raw_cls_feats"] = result.raw_cls_feats
        got[f"{name}.cls_vlffn_feats"] = out.cls_vlffn_feats
    fused = model.forward_image_text(ids, mask, image, output_hidden_states=True)
    got["infer.embeds"] = fused.embeds
    got["infer.hidden_states"] = torch.stack(fused.hidden_states)
    for key in ("text_feats", "image_feats", "cls_feats", "raw_cls_feats"):
        got[f"infer.{key}"] = getattr(fused, key)
    got["heads.itm_logits_pos"] = model.itm_score(fused.cls_feats)
    fused_mlm = model.forward_image_text(inputs["text_ids_mlm"], mask, image)
    got["infer_mlm.text_feats"] = fused_mlm.text_feats
    got["infer_mlm.cls_feats"] = fused_mlm.cls_feats
    got["heads.mlm_logits"] = model.mlm_score(fused_mlm.text_feats)
    itc = obj.compute_itc(model, image, ids, mask)
    got["objectives.itc_loss"] = itc.loss
    got["objectives.itc_i2t_logits"] = itc.i2t_logits
    got["objectives.itc_t2i_logits"] = itc.t2i_logits
    got["objectives.itc_logit_scale"] = itc.logit_scale
    got["objectives.itc_logit_vl_scale"] = itc.logit_vl_scale
    got["objectives.itc_labels"] = torch.arange(image.shape[0])
    itm = obj.compute_itm(model, image, ids, mask, itc.i2t_logits)
    got["objectives.itm_loss"] = itm.loss
    got["objectives.itm_logits"] = itm.logits
    got["objectives.itm_labels"] = itm.labels
    labels = inputs["text_labels_mlm"]
    mlm = obj.compute_mlm(model, image, inputs["text_ids_mlm"], mask, labels)
    got["objectives.mlm_loss"] = mlm.loss
    got["objectives.mlm_logits"] = mlm.logits  # (M, V): the masked rows only
    got["objectives.mlm_labels"] = labels.masked_scatter(labels != -100, mlm.labels)
    return got


@pytest.fixture(scope="module", params=list(FIXTURES))
def parity(request: pytest.FixtureRequest) -> tuple[str, VLMo, dict, dict]:
    folder = FIXTURES[request.param]
    if not (folder / "outputs.npz").is_file():
        pytest.skip(f"VLMo parity fixture not found at {folder} (shared/reference is absent)")
    model, report = load_vlmo(folder / "state_dict.safetensors")
    assert report.missing == report.unexpected == ()
    model.eval()
    with np.load(folder / "inputs.npz") as data:
        inputs = {k: torch.from_numpy(v) for k, v in data.items()}
    with np.load(folder / "outputs.npz") as data:
        expected = dict(data)
    with torch.no_grad():
        got = {k: v.numpy() for k, v in _official_outputs(model, inputs).items()}
    return request.param, model, got, expected


def test_parity_with_official_outputs(parity: tuple[str, VLMo, dict, dict]) -> None:
    _, _, got, expected = parity
    assert set(got) == set(expected)
    failures = []
    for name, want in expected.items():
        have = got[name]
        if name == "objectives.mlm_logits":
            want = want[expected["objectives.mlm_labels"] != -100]
        assert have.shape == want.shape, name
        if want.dtype.kind in "iu":
            if not np.array_equal(have, want):
                failures.append(f"{name}: integers differ")
        elif not np.allclose(have, want, atol=ATOL, rtol=RTOL):
            failures.append(f"{name}: max |diff| {np.abs(have - want).max():.2e}")
    assert not failures, failures


def test_parity_config_and_names(parity: tuple[str, VLMo, dict, dict]) -> None:
    """The checkpoint's config is the preset, and our names are the official ones (strict load)."""
    preset, model, _, _ = parity
    assert model.config == VLMoConfig.preset(preset)
    official = read_checkpoint(FIXTURES[preset] / "state_dict.safetensors")
    dropped = {"text_embeddings.position_ids"}
    if model.config.relative_position_bias:  # the BERT text position table is unused there
        dropped.add("text_embeddings.position_embeddings.weight")
    ours = model.state_dict()
    assert set(ours) == set(official) - dropped
    assert all(ours[k].shape == official[k].shape for k in ours)
    model.load_state_dict({k: v for k, v in official.items() if k not in dropped}, strict=True)


@pytest.fixture(params=list(VARIANTS))
def tiny(request: pytest.FixtureRequest) -> VLMo:
    torch.manual_seed(0)
    return VLMo(VARIANTS[request.param]).eval()


def _batch(b: int = 3, n_text: int = 8, lengths: tuple[int, ...] = (8, 5, 2)) -> tuple:
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(b, 3, 32, 32, generator=generator) * 2 - 1
    ids = torch.randint(4, 100, (b, n_text), generator=generator)
    mask = (torch.arange(n_text) < torch.tensor(lengths[:b])[:, None]).long()
    return image, ids * mask, mask


def test_forward_mode_shapes(tiny: VLMo) -> None:
    image, ids, mask = _batch()
    d, n_image = 32, 17
    with torch.no_grad():
        img = tiny.forward_image(image, vl_branch=True, output_hidden_states=True)
        txt = tiny.forward_text(ids, mask, vl_branch=True, output_hidden_states=True)
        fused = tiny.forward_image_text(ids, mask, image, output_hidden_states=True)
        lean = tiny.forward_image(image, vl_branch=True)
    assert img.embeds.shape == img.feats.shape == (3, n_image, d)
    assert len(img.hidden_states) == 4 and len(img.vlffn_hidden_states) == 2
    assert txt.feats.shape == (3, 8, d) and len(txt.vlffn_hidden_states) == 2
    for out in (img, txt):
        assert out.cls_feats is not None and out.cls_vlffn_feats is not None
        assert out.cls_feats.shape == out.raw_cls_feats.shape == (3, d)
        assert torch.allclose(out.cls_feats.norm(dim=-1), torch.ones(3))
    assert lean.hidden_states == lean.vlffn_hidden_states == ()  # kept only when asked for
    torch.testing.assert_close(lean.cls_vlffn_feats, img.cls_vlffn_feats)
    assert fused.embeds.shape == (3, 8 + n_image, d) and len(fused.hidden_states) == 4
    assert fused.text_feats.shape == (3, 8, d) and fused.image_feats.shape == (3, n_image, d)
    assert fused.cls_feats.shape == (3, d) and fused.cls_feats.abs().max() <= 1
    assert all(torch.isfinite(t).all() for t in (img.feats, txt.feats, fused.text_feats))
    assert isinstance(tiny(image=image), type(img)) and isinstance(
        tiny(image, ids, mask), type(fused)
    )


def test_padding_does_not_change_real_tokens(tiny: VLMo) -> None:
    """Text shorter than max_text_len (dynamic padding) gives the same real-token outputs."""
    image, ids, mask = _batch(b=2, lengths=(5, 3))
    with torch.no_grad():
        full_text = tiny.forward_text(ids, mask).feats
        short_text = tiny.forward_text(ids[:, :5], mask[:, :5]).feats
        full = tiny.forward_image_text(ids, mask, image)
        short = tiny.forward_image_text(ids[:, :5], mask[:, :5], image)
    real = mask[:, :5].bool()
    torch.testing.assert_close(short_text[real], full_text[:, :5][real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(short.text_feats[real], full.text_feats[:, :5][real])
    torch.testing.assert_close(short.image_feats, full.image_feats, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(short.cls_feats, full.cls_feats, atol=1e-5, rtol=1e-5)


def test_bad_inputs_raise(tiny: VLMo) -> None:
    with pytest.raises(ValueError, match="image size"):
        tiny.forward_image(torch.zeros(1, 3, 48, 48))
    with pytest.raises(ValueError, match="max_text_len"):
        tiny.forward_text(torch.ones(1, 9, dtype=torch.long), torch.ones(1, 9))
    with pytest.raises(ValueError, match="together"):
        tiny(text_ids=torch.ones(1, 4, dtype=torch.long))


EXPERT_USE = {
    # mode -> (experts that must get gradients, experts that must not), by block
    "image": (lambda i: {"mlp_imag"}, lambda i: {"mlp_text", "mlp_vl"}),
    "image+vl": (
        lambda i: {"mlp_imag"} | ({"mlp_vl"} if i >= 2 else set()),
        lambda i: {"mlp_text"},
    ),
    "text": (lambda i: {"mlp_text"}, lambda i: {"mlp_imag", "mlp_vl"}),
    "fusion": (
        lambda i: {"mlp_vl"} if i >= 2 else {"mlp_text", "mlp_imag"},
        lambda i: {"mlp_text", "mlp_imag"} if i >= 2 else set(),
    ),
}


@pytest.mark.parametrize("mode", list(EXPERT_USE))
def test_gradients_reach_only_the_experts_used(tiny: VLMo, mode: str) -> None:
    image, ids, mask = _batch()
    if mode == "fusion":
        loss = tiny.forward_image_text(ids, mask, image).cls_feats.sum()
    else:
        vl = mode.endswith("+vl")
        out = (
            tiny.forward_image(image, vl_branch=vl)
            if mode.startswith("image")
            else tiny.forward_text(ids, mask)
        )
        loss = out.feats.sum() + (out.cls_vlffn_feats.sum() if vl else 0)
    loss.backward()
    used, unused = EXPERT_USE[mode]
    for i, block in enumerate(tiny.transformer.blocks):
        assert block.attn.qkv.weight.grad is not None  # attention is shared by every mode
        for expert in {"mlp_imag", "mlp_text", "mlp_vl"}:
            module = getattr(block, expert)
            if module is None:
                continue
            grad = module.fc1.weight.grad
            if expert in used(i):
                assert grad is not None and grad.abs().sum() > 0, (i, expert)
            if expert in unused(i):
                assert grad is None, (i, expert)


def test_gradient_checkpointing_matches(tiny: VLMo) -> None:
    image, ids, mask = _batch()
    tiny.train()
    grads = []
    for flag in (False, True):
        tiny.zero_grad()
        tiny.gradient_checkpointing = flag
        tiny.forward_image_text(ids, mask, image).cls_feats.sum().backward()
        grads.append(tiny.transformer.blocks[0].attn.qkv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_objectives_train_and_check_heads(tiny: VLMo) -> None:
    image, ids, mask = _batch()
    itc = obj.compute_itc(tiny, image, ids, mask)
    itm = obj.compute_itm(tiny, image, ids, mask, itc.i2t_logits, torch.Generator().manual_seed(0))
    labels = torch.full_like(ids, -100)
    labels[:, 1] = ids[:, 1]
    mlm = obj.compute_mlm(tiny, image, ids.masked_fill(labels != -100, 3), mask, labels)
    (itc.loss + itm.loss + mlm.loss).backward()
    assert itm.logits.shape == (9, 2) and itm.labels.tolist() == [1] * 3 + [0] * 6
    assert mlm.logits.shape == (3, 100)
    assert tiny.logit_vl_scale.grad is not None and tiny.mlm_score.bias.grad is not None
    with pytest.raises(ValueError, match="at least 2"):
        obj.sample_hard_negatives(torch.zeros(1, 1))
    picks = obj.sample_hard_negatives(torch.tensor([[100.0, -100.0, -100.0]] * 3))
    assert (picks != torch.arange(3)).all()  # underflowed rows fall back to a uniform draw
    no_heads = VLMo(VLMoConfig(**TINY, heads=("itc",)))
    with pytest.raises(ConfigError, match="itc_vl"):
        obj.compute_itc(no_heads, image, ids, mask)


def test_lora_on_attention_projections(tiny: VLMo) -> None:
    from peft import LoraConfig, get_peft_model

    image, _, _ = _batch()
    with torch.no_grad():
        before = tiny.forward_image(image).feats
    model = get_peft_model(tiny, LoraConfig(r=4, target_modules=["attn.qkv", "attn.proj"]))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) == 4 * 4  # 4 blocks x {qkv, proj} x {A, B}
    assert all(".lora_A." in n or ".lora_B." in n for n in trainable)
    for name, param in model.named_parameters():
        if ".lora_B." in name:
            torch.nn.init.normal_(param, std=0.1)  # B starts at 0; make the adapters count
    out = model.forward_image(image).feats
    assert not torch.allclose(out, before)  # qkv and proj are called as modules
    out.sum().backward()
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def _official_style(model: VLMo) -> dict[str, torch.Tensor]:
    """``model``'s weights as an official checkpoint stores them: with the ``position_ids``
    buffer, an index buffer, and the text position table even where it is unused."""
    sd = dict(model.state_dict())
    n_text, dim = model.config.max_text_len, model.config.hidden_size
    sd["text_embeddings.position_ids"] = torch.arange(n_text)[None]
    sd.setdefault("text_embeddings.position_embeddings.weight", torch.randn(n_text, dim))
    if model.config.relative_position_bias:
        sd["relative_position_index"] = model.relative_position_index
    return sd


def test_checkpoint_round_trips(tiny: VLMo, tmp_path: Path) -> None:
    image, ids, mask = _batch()
    with torch.no_grad():
        want = tiny.forward_image_text(ids, mask, image).cls_feats
    sd = _official_style(tiny)
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "lightning.ckpt")
    torch.save({"module": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "deepspeed.pt")
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "flat.safetensors")
    for name in ("lightning.ckpt", "deepspeed.pt", "flat.safetensors"):
        # no bias table in the "absolute" variant: its head count is not in the weights
        model, report = load_vlmo(tmp_path / name, num_heads=4, drop_path_rate=0.0)
        assert model.config == tiny.config, name
        assert report.missing == report.unexpected == ()
        with torch.no_grad():
            torch.testing.assert_close(
                model.eval().forward_image_text(ids, mask, image).cls_feats, want
            )


def test_checkpoint_errors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = VLMo(VARIANTS["relative"])
    sd = _official_style(source)
    target = VLMo(VARIANTS["relative"])
    without_norm = {k: v for k, v in sd.items() if k != "transformer.blocks.1.norm1.weight"}
    with pytest.raises(ConfigError, match=r"transformer\.blocks\.1\.norm1\.weight"):
        load_state_dict_into(target, without_norm)
    without_itm = {k: v for k, v in sd.items() if not k.startswith("itm_score.")}
    with pytest.raises(ConfigError, match="itm_score"):
        load_state_dict_into(target, without_itm)
    report = load_state_dict_into(target, without_itm, allow_missing={"itm"})
    assert set(report.missing) == {"itm_score.fc.weight", "itm_score.fc.bias"}
    extra_head = {**sd, "vqa_classifier.0.weight": torch.zeros(2, 2)}
    assert load_state_dict_into(target, extra_head).unexpected == ("vqa_classifier.0.weight",)
    smaller = VLMo(VLMoConfig(**TINY, heads=("itc",)))
    assert "mlm_score.bias" in load_state_dict_into(smaller, sd).unexpected
    deeper = {**sd, "transformer.blocks.9.norm1.weight": torch.ones(32)}
    with pytest.raises(ConfigError, match="backbone"):
        load_state_dict_into(target, deeper)
    with pytest.raises(ConfigError, match="shapes"):
        load_state_dict_into(VLMo(VLMoConfig(**{**TINY, "vocab_size": 50})), sd)
    with pytest.raises(ConfigError, match="unknown heads"):
        load_state_dict_into(target, sd, allow_missing={"classifier"})
    with pytest.raises(ConfigError, match="not found"):
        read_checkpoint(tmp_path / "absent.pt")
    torch.save({"state_dict": {"encoder.weight": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="not a VLMo checkpoint"):
        read_checkpoint(tmp_path / "other.pt")
    # beside the weights, objects of other classes (as official checkpoints carry) load inert
    torch.save({"state_dict": sd, "hparams": argparse.Namespace(lr=1)}, tmp_path / "pickled.pt")
    assert read_checkpoint(tmp_path / "pickled.pt").keys() == sd.keys()
    # and a payload that would run a command is refused, without running it
    ran = tmp_path / "ran"
    torch.save({"state_dict": sd, "payload": _Payload(ran)}, tmp_path / "payload.pt")
    with pytest.raises(ConfigError, match=r"cannot read VLMo checkpoint .*payload\.pt: .*blocked"):
        read_checkpoint(tmp_path / "payload.pt")
    assert not ran.exists()


class _Payload:
    """Unpickling it would run ``touch`` (a tampered checkpoint)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, ...]]:
        return os.system, (f"touch {self.path}",)


def test_position_tensors_resize_with_the_image() -> None:
    torch.manual_seed(0)
    relative = VLMo(VARIANTS["relative"])
    with torch.no_grad():
        relative.relative_position_bias_table.normal_()
    table = relative.relative_position_bias_table.detach()
    bigger = VLMo(VARIANTS["relative"].model_copy(update={"image_size": 48}))
    load_state_dict_into(bigger, _official_style(relative))
    resized = bigger.relative_position_bias_table.detach()
    old_grid, new_grid = 7, 11  # 2W - 1 at 32 px and 48 px (patch 8)
    assert resized.shape == (new_grid**2 + 3 + 2 + 2 * 196, 16)
    torch.testing.assert_close(resized[new_grid**2 :], table[old_grid**2 :])  # non-patch rows
    old = table[: old_grid**2].view(old_grid, old_grid, -1)
    new = resized[: new_grid**2].view(new_grid, new_grid, -1)
    torch.testing.assert_close(new[5, 5], old[3, 3])  # offset (0, 0)
    torch.testing.assert_close(new[0, 10], old[0, 6])  # the far corner stays the far corner
    offsets = geometric_offsets(old_grid, new_grid)
    assert offsets[3] == 0 and offsets[-1] == pytest.approx(5) and np.diff(offsets).min() >= 1

    absolute = VLMo(VARIANTS["absolute"])
    with torch.no_grad():
        absolute.transformer.pos_embed.fill_(0.5)
        absolute.transformer.pos_embed[0, 0] = -1.0
    model = VLMo(VARIANTS["absolute"].model_copy(update={"image_size": 48}))
    load_state_dict_into(model, _official_style(absolute))
    pos = model.transformer.pos_embed.detach()
    assert pos.shape == (1, 37, 32) and (pos[0, 0] == -1).all()
    torch.testing.assert_close(pos[0, 1:], torch.full((36, 32), 0.5))


def test_text_positions_are_truncated_or_dropped() -> None:
    absolute = VLMo(VARIANTS["absolute"])
    sd = _official_style(absolute)
    sd["text_embeddings.position_embeddings.weight"] = torch.randn(40, 32)
    load_state_dict_into(absolute, sd)
    torch.testing.assert_close(
        absolute.text_embeddings.position_embeddings.weight.detach(),
        sd["text_embeddings.position_embeddings.weight"][:8],
    )
    sd["text_embeddings.position_embeddings.weight"] = torch.randn(4, 32)
    with pytest.raises(ConfigError, match="fewer than"):
        load_state_dict_into(absolute, sd)
    relative = VLMo(VARIANTS["relative"])
    assert relative.text_embeddings.position_embeddings is None  # unused, so not built


def test_config_from_state_dict() -> None:
    relative = _official_style(VLMo(VARIANTS["relative"]))
    assert config_from_state_dict(relative, drop_path_rate=0.0) == VARIANTS["relative"]
    absolute = _official_style(VLMo(VARIANTS["absolute"]))
    with pytest.raises(ConfigError, match="num_heads"):  # 4 x 32 is no preset's size
        config_from_state_dict(absolute)
    inferred = config_from_state_dict(absolute, num_heads=4, drop_path_rate=0.0)
    assert inferred == VARIANTS["absolute"]
    with pytest.raises(ConfigError, match="lacks"):
        config_from_state_dict({"transformer.cls_token": torch.zeros(1, 1, 32)})
    with pytest.raises(ConfigError, match="unknown VLMo preset"):
        VLMoConfig.preset("huge")
    with pytest.raises(ConfigError, match="multiple of num_heads"):
        VLMoConfig.preset("tiny", num_heads=5)
    assert VLMoConfig.preset("base_plus").hidden_size == 544


def test_tokenizer_pads_to_max_text_len(tmp_path: Path) -> None:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "shoe", "##s", "for", "kids"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    for source in (tmp_path, tmp_path / "vocab.txt"):
        tokenizer = VLMoTokenizer(source, max_text_len=6)
        batch = tokenizer(["Red Shoes", "red shoes for kids red"])
        assert batch.ids.tolist() == [[2, 5, 6, 7, 3, 0], [2, 5, 6, 7, 8, 3]]
        assert batch.mask.tolist() == [[1, 1, 1, 1, 1, 0], [1] * 6]
        assert batch.ids.dtype == batch.mask.dtype == torch.long
        assert tokenizer.vocab_size == len(vocab)
    with pytest.raises(ConfigError, match="not found"):
        VLMoTokenizer(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"vocab\.txt"):
        VLMoTokenizer(tmp_path / "empty")


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "shoe", "##s", "for", "kids"]


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """A tiny official-style checkpoint with a vocab.txt beside it."""
    torch.manual_seed(0)
    torch.save({"state_dict": _official_style(VLMo(VARIANTS["relative"]))}, tmp_path / "tiny.pt")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return tmp_path / "tiny.pt"


def test_encoder_outputs(tiny_checkpoint: Path) -> None:
    encoder = build(f"vlmo:{tiny_checkpoint}", vl=True)
    red = Image.new("RGB", (50, 40), (255, 0, 0))
    inputs = encoder.preprocess(ItemBatch(texts=["Red shoes", "kids"], images=[red, None]))
    pixels = inputs["pixel_values"]
    assert pixels.shape == (2, 3, 32, 32) and inputs["input_ids"].shape == (2, 8)
    assert (pixels[0, 0] == 1).all() and (pixels[0, 1:] == -1).all()  # (x - 0.5) / 0.5
    assert inputs["input_ids"][0].tolist() == [2, 5, 6, 7, 3, 0, 0, 0]
    with torch.no_grad():
        out = encoder(inputs)
        model = encoder.model
        image = model.forward_image(pixels).cls_feats
        text = model.forward_text(inputs["input_ids"], inputs["attention_mask"]).cls_feats
        vl = model.forward_image_text(inputs["input_ids"], inputs["attention_mask"], pixels)
        image_only = encoder(select(inputs, IMAGE_KEYS))
    assert encoder.output_dims() == dict.fromkeys(("image", "text", "fused", "vl"), 32)
    assert {k: tuple(v.shape) for k, v in out.items()} == dict.fromkeys(
        encoder.output_dims(), (2, 32)
    )
    torch.testing.assert_close(out["image"], image)
    torch.testing.assert_close(out["text"], text)
    torch.testing.assert_close(out["vl"], vl.cls_feats)
    torch.testing.assert_close(out["fused"][1], torch.nn.functional.normalize(text[1], dim=0))
    assert set(image_only) == {"image"}
    assert model.config.heads == ("itc",)  # the heads the encoder does not use are not built
    assert encoder.describe()["checkpoint"] == str(tiny_checkpoint)
    assert set(build(f"vlmo:{tiny_checkpoint}").output_dims()) == {"image", "text", "fused"}


def test_encoder_strategies(tiny_checkpoint: Path) -> None:
    encoder = build(f"vlmo:{tiny_checkpoint}")
    model = encoder.model

    def count(*modules: torch.nn.Module) -> int:
        return sum(p.numel() for m in modules for p in m.parameters())

    heads = (model.itc_image_proj, model.itc_text_proj, model.pooler)
    assert encoder.apply_strategy("frozen") == []
    assert sum(p.numel() for p in encoder.apply_strategy("projection")) == count(*heads)
    top = encoder.apply_strategy("top:1")
    assert sum(p.numel() for p in top) == count(
        *heads, model.transformer.norm, model.transformer.blocks[3]
    )
    with pytest.raises(ConfigError, match="only 4 layers"):
        encoder.apply_strategy("top:5")
    assert len(encoder.apply_strategy("full")) == len(list(encoder.parameters()))
    inputs = encoder.preprocess(ItemBatch(texts=["red"], images=[Image.new("RGB", (32, 32))]))
    with torch.no_grad():
        before = encoder(inputs)["text"]
    trainable = encoder.apply_strategy("lora:2")
    names = [n for n, p in encoder.named_parameters() if p.requires_grad]
    assert sum("attn.qkv.lora_" in n for n in names) == 2 * 4  # A and B in each of 4 blocks
    assert sum(p.numel() for p in trainable) == count(*heads) + 4 * 2 * (32 + 96)
    with torch.no_grad():
        torch.testing.assert_close(encoder(inputs)["text"], before)  # B starts at zero
    encoder(inputs)["image"].sum().backward()
    assert all(p.grad is None for p in encoder.parameters() if not p.requires_grad)


def test_encoder_errors(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a checkpoint"):
        build("vlmo")
    with pytest.raises(ConfigError, match="not found"):
        build(f"vlmo:{tmp_path / 'absent.pt'}")
    (tmp_path / "vocab.txt").unlink()
    with pytest.raises(ConfigError, match="tokenizer="):
        build(f"vlmo:{tiny_checkpoint}")

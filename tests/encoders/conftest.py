"""Tiny random encoders saved to temporary folders and loaded back through lmmrec's real loaders.

Nothing is downloaded: the Hugging Face hub is switched off before transformers is imported, and
every vocabulary is written here.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lmmrec.data.catalog import ItemCatalog
from lmmrec.data.dataset import Dataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WORDS = ("a", "the", "red", "blue", "green", "bottle", "box", "ball", "shirt", "mug", "bag")
WORDS += ("hat", "lamp", "glass", "made", "of", "by", "in", "and")
CLIP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.,!-|&'"
CLIP_MERGES = ["t h", "th e</w>", "a n", "an d</w>", "r e", "re d</w>"]


def _tiny_clip_vocab() -> dict[str, int]:
    """Byte-pair vocabulary: every character alone and word-final, a few merges, BOS and EOS."""
    tokens = list(CLIP_CHARS) + [c + "</w>" for c in CLIP_CHARS]
    tokens += [m.replace(" ", "") for m in CLIP_MERGES] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


@pytest.fixture(scope="session")
def clip_vocab() -> dict[str, int]:
    return _tiny_clip_vocab()


@pytest.fixture(scope="session")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer CLIP (32-d towers, 16-d space, 32 px images), tokenizer, processor."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = tmp_path_factory.mktemp("clip")
    vocab = _tiny_clip_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(CLIP_MERGES) + "\n")
    eos = vocab["<|endoftext|>"]
    tower = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            max_position_embeddings=77,
            projection_dim=16,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=eos,
            pad_token_id=eos,
            **tower,
        ),
        vision_config=dict(image_size=32, patch_size=8, projection_dim=16, **tower),
        projection_dim=16,
    )
    import torch

    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    CLIPTokenizer.from_pretrained(folder).save_pretrained(folder)
    CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)
    return folder


def _bert_folder(folder: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    import torch

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=5 + len(WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    BertTokenizer(vocab=str(vocab)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def sbert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sentence-transformers folder: random 2-layer BERT (32-d) -> mean pooling -> normalise."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    bert = _bert_folder(tmp_path_factory.mktemp("bert"))
    folder = tmp_path_factory.mktemp("sbert")
    modules = [Transformer(str(bert), max_seq_length=16), Pooling(32, "mean"), Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


@pytest.fixture(scope="session")
def vit_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer ViT (24 px, 32-d) with a square-resize image processor."""
    from transformers import ViTConfig, ViTModel
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    folder = tmp_path_factory.mktemp("vit")
    config = ViTConfig(
        image_size=24,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
    )
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 24, "width": 24}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def resnet_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny ResNet with ConvNeXt-style preprocessing (crop_pct)."""
    from transformers import ResNetConfig, ResNetModel
    from transformers.models.convnext.image_processing_pil_convnext import (
        ConvNextImageProcessorPil,
    )

    folder = tmp_path_factory.mktemp("resnet")
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])
    ResNetModel(config).save_pretrained(folder)
    ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(folder)
    return folder


@pytest.fixture
def images() -> list[Image.Image]:
    """Random RGB images of varied sizes (width x height): landscape, portrait, tiny, large."""
    rng = np.random.default_rng(0)
    sizes = [(40, 30), (30, 40), (17, 23), (64, 64), (100, 37), (9, 12)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


@pytest.fixture
def catalog_dataset(tiny_dataset: Dataset, tmp_path: Path) -> Dataset:
    """The planted dataset (40 items) saved with a catalog: no image for items 3 and 11, an
    unreadable one for item 7, empty texts for items 5 and 11."""
    rng = np.random.default_rng(1)
    (tmp_path / "images").mkdir()
    images: list[str | None] = []
    for item in range(tiny_dataset.n_items):
        name = f"images/{item}.png"
        if item in (3, 11):
            images.append(None)
            continue
        if item == 7:
            (tmp_path / name).write_bytes(b"not a png")
        else:
            pixels = rng.integers(0, 256, (20 + item, 30, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / name)
        images.append(name)
    texts = [
        "" if item in (5, 11) else " ".join(rng.choice(WORDS, 3 + item % 5))
        for item in range(tiny_dataset.n_items)
    ]
    tiny_dataset.catalog = ItemCatalog(texts=texts, images=images, root=tmp_path)
    tiny_dataset.save(tmp_path)
    return Dataset.load(tmp_path)


# -- a tiny shop whose texts name what its images show, and towers that read its words ---------

SHOP_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="session")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """A 160-item demo shop (32 px images): category and colour show in image and text, so
    image-text alignment is learnable. Copy it before changing it."""
    from lmmrec.data.demo import DemoConfig, build_demo

    config = DemoConfig(n_users=150, n_items=160, image_size=32, mean_interactions=8)
    return build_demo(tmp_path_factory.mktemp("shop"), config)


def shop_words(shop: Dataset) -> list[str]:
    assert shop.catalog is not None
    return sorted({w for t in shop.catalog.texts for w in re.findall(r"[a-z]+", t.lower())})


@pytest.fixture(scope="session")
def shop_sbert_folder(tmp_path_factory: pytest.TempPathFactory, shop: Dataset) -> Path:
    """A sentence-transformers folder over a random 2-layer BERT (32-d) with the shop's words."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers import BertConfig, BertModel, BertTokenizer

    bert = tmp_path_factory.mktemp("shop-bert")
    words = SHOP_SPECIAL + shop_words(shop)
    (bert / "vocab.txt").write_text("\n".join(words) + "\n")
    import torch

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(bert)
    BertTokenizer(vocab=str(bert / "vocab.txt")).save_pretrained(bert)
    folder = tmp_path_factory.mktemp("shop-sbert")
    modules = [Transformer(str(bert), max_seq_length=32), Pooling(32, "mean"), Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


@pytest.fixture(scope="session")
def shop_vlmo_checkpoint(tmp_path_factory: pytest.TempPathFactory, shop: Dataset) -> Path:
    """A random tiny VLMo (32-d, 4 blocks, VL-FFN from block 2, 32 px, 16 text tokens) with
    every pre-training head, saved with the official names, and the shop's vocab.txt beside it."""
    import torch
    from safetensors.torch import save_file

    from lmmrec.encoders.vlmo import VLMo, VLMoConfig

    folder = tmp_path_factory.mktemp("shop-vlmo")
    words = SHOP_SPECIAL + shop_words(shop)
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    torch.manual_seed(0)
    config = VLMoConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_layers=4,
        num_heads=4,
        vlffn_start_layer_index=2,
        vocab_size=len(words),
        max_text_len=16,
    )
    state = {k: v.contiguous() for k, v in VLMo(config).state_dict().items()}
    # official files keep a text position table even where it is unused; its rows give Lt
    state["text_embeddings.position_embeddings.weight"] = torch.zeros(config.max_text_len, 32)
    save_file(state, folder / "vlmo.safetensors")
    return folder / "vlmo.safetensors"

"""End-to-end training: the recommendation loss back-propagates into the item encoder.

The paper's third paradigm (Yi et al., arXiv 2310.20343, §3.3: the encoder "trained end-to-end
with the recommendation loss"). The authors' released code re-encodes the whole catalogue with
CLIP under ``no_grad`` and detaches the features, so no gradient reaches their encoder; here it
does, at a cost that follows the batch rather than the catalogue, the way MicroLens, PixelRec and
IDvs.MoRec train their encoders (encode only the batch's items, a separate optimiser group):

* :class:`ItemEncoding`: the encoder and every item's preprocessed inputs (prepared once); it
  encodes a set of items with gradients, in chunks of ``chunk_size`` items that bound the peak
  memory (optionally recomputed in the backward pass: activation checkpointing), or every item
  without gradients. When only projection heads train (strategy ``projection``) and the encoder
  separates towers from heads, the tower vectors are computed once and only the heads run in a
  step.
* :class:`FeatureBank`: every item's latest encoder outputs ``[I, d_m]``, detached; a step's view
  replaces the rows of the batch's items with fresh outputs that carry gradients, so graph models
  that read every item's features (LATTICE, FREEDOM, BM3 ...) need no special case. It is
  refreshed on a schedule: every epoch (default), every N steps, after every step (the authors'
  design, gradients aside), or never.
* :class:`EndToEnd`: the step module: encoder + bank + recommender. ``forward(batch)`` is the loss,
  so DDP wraps all of it; it hands the optimiser two parameter groups (encoder, recommender).

Dimensions: I items, n distinct items of a step, d_m output size of modality m.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lmmrec.data.dataset import Dataset
from lmmrec.data.features import FeatureSet
from lmmrec.data.sampling import Batch
from lmmrec.encoders.base import INPUT_MODALITIES, ItemEncoder
from lmmrec.encoders.features import PRESENT, CatalogBatches
from lmmrec.encoders.objectives import contrastive_loss
from lmmrec.encoders.preprocessing import IMAGE_KEYS, ItemBatch
from lmmrec.encoders.towers import (
    heads_only,
    matching_tower_set,
    stored_statuses,
    stored_tower_vectors,
)
from lmmrec.errors import ConfigError, FeatureError
from lmmrec.models.base import ItemFeatures, Recommender
from lmmrec.training.config import EncoderConfig
from lmmrec.training.sources import StepModule

logger = logging.getLogger(__name__)

SEQUENCE_KEYS = ("input_ids", "attention_mask", "token_type_ids")
PRESENCE_KEYS = ("image_present", "text_present")


def catalog_inputs(
    encoder: ItemEncoder, dataset: Dataset, batch_size: int = 256, num_workers: int = 0
) -> dict[str, torch.Tensor]:
    """Every item's preprocessed encoder inputs, ``{key: [I, ...]}`` in item order.

    Texts are tokenised in one call (one padding length for the catalogue); images are decoded
    and transformed in ``batch_size`` batches by ``num_workers`` DataLoader workers.

    Raises:
        FeatureError: the dataset has no item catalogue.
    """
    if dataset.catalog is None:
        raise FeatureError(
            f"dataset {dataset.name!r} has no item catalogue (texts, images), so no encoder can "
            "read its items; attach one (`lmmrec data attach-items`) or train on stored features"
        )
    catalog, preprocessor = dataset.catalog, encoder.preprocessor
    inputs: dict[str, torch.Tensor] = {}
    if preprocessor.text is not None:
        inputs |= preprocessor(ItemBatch(texts=list(catalog.texts)))
    if preprocessor.image is not None:
        batches = CatalogBatches(catalog, preprocessor, ("image",), 0, batch_size)
        loader = DataLoader(batches, batch_size=None, num_workers=num_workers)
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in IMAGE_KEYS}
        for _, batch in tqdm(loader, desc="preprocess images", unit="batch", disable=None):
            for key in IMAGE_KEYS:
                parts[key].append(batch[key])
        inputs |= {k: torch.cat(v) for k, v in parts.items()}
    return inputs


def encoder_inputs(
    encoder: ItemEncoder, dataset: Dataset, batch_size: int = 256, num_workers: int = 0
) -> dict[str, torch.Tensor]:
    """What end-to-end steps read of each item: :func:`catalog_inputs`, or only the presence
    masks ``{"<m>_present": [I]}`` when the heads alone train over tower vectors that a stored
    feature set holds (no image is decoded then)."""
    stored = matching_tower_set(encoder, dataset.features.values()) if heads_only(encoder) else None
    if stored is None or dataset.catalog is None:
        return catalog_inputs(encoder, dataset, batch_size, num_workers)
    statuses = stored_statuses(stored, dataset.catalog)
    return {f"{m}_present": torch.from_numpy(s == PRESENT) for m, s in statuses.items()}


def _rows(inputs: dict[str, torch.Tensor], items: torch.Tensor) -> dict[str, torch.Tensor]:
    """The inputs of ``items``, token sequences cut to the longest text among them."""
    rows = {k: v[items] for k, v in inputs.items()}
    if "attention_mask" in rows:
        length = max(int(rows["attention_mask"].sum(1).max()), 1)
        for key in SEQUENCE_KEYS:
            if key in rows:
                rows[key] = rows[key][:, :length]
    return rows


class ItemEncoding(nn.Module):
    """An encoder over a fixed catalogue: items (indices) in, ``{modality: [n, d_m]}`` out.

    Outputs of ``image`` / ``text`` are zero for items lacking that input (the ``zeros`` policy
    of stored feature sets), ``fused`` as the encoder makes it.

    Args:
        encoder: the item encoder, its strategy already applied.
        inputs: :func:`catalog_inputs` of the catalogue.
        modalities: the outputs to produce.
        chunk_size: items per encoder forward.
        activation_checkpointing: recompute each chunk's activations in the backward pass.
    """

    def __init__(
        self,
        encoder: ItemEncoder,
        inputs: dict[str, torch.Tensor],
        modalities: list[str],
        chunk_size: int,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        unknown = sorted(set(modalities) - set(encoder.output_dims()))
        if unknown:
            raise ConfigError(
                f"encoder.modalities: {encoder.spec!r} makes no {unknown} vectors; it makes "
                f"{', '.join(encoder.output_dims())}"
            )
        self.encoder = encoder
        self.modalities = list(modalities)
        self.chunk_size = chunk_size
        self.activation_checkpointing = activation_checkpointing
        self.inputs = nn.Module()
        self.input_keys = list(inputs)
        for key, tensor in inputs.items():
            self.inputs.register_buffer(key, tensor, persistent=False)
        self.tower_cache: nn.Module | None = None

    def _input_rows(self, items: torch.Tensor, keys: Sequence[str] | None = None) -> dict:
        """The inputs of ``items`` (only ``keys`` when given) -> ``{key: [n, ...]}``."""
        keys = self.input_keys if keys is None else [k for k in keys if k in self.input_keys]
        return _rows({k: getattr(self.inputs, k) for k in keys}, items)

    def cache_towers_if_frozen(self, stored: Iterable[FeatureSet] = ()) -> bool:
        """When only the heads train, compute the tower vectors of every item once, or take
        them from a ``stored`` feature set that those towers made (same weights hash,
        preprocessing and dimensions, ``zeros`` policy); returns whether the cache is in use."""
        if not heads_only(self.encoder):
            self.tower_cache = None
            return False
        vectors = stored_tower_vectors(self.encoder, stored)
        if vectors is None:
            with self._inference():
                parts = [
                    self.encoder.towers(self._input_rows(chunk))
                    for chunk in self._all_chunks("encode towers")
                ]
            vectors = {m: torch.cat([p[m] for p in parts]) for m in parts[0]}
        cache = nn.Module()
        device = getattr(self.inputs, self.input_keys[0]).device
        for modality, tensor in vectors.items():
            cache.register_buffer(modality, tensor.float().to(device), persistent=False)
        self.tower_cache = cache
        return True

    def presence(self, items: torch.Tensor, modalities: Sequence[str]) -> torch.Tensor:
        """``[n]`` bool: which of ``items`` have every input modality in ``modalities``."""
        present = torch.ones(len(items), dtype=torch.bool, device=items.device)
        for modality in modalities:
            if f"{modality}_present" in self.input_keys:
                present &= getattr(self.inputs, f"{modality}_present")[items]
        return present

    def _n_items(self) -> int:
        return int(getattr(self.inputs, self.input_keys[0]).shape[0])

    def _all_chunks(self, desc: str) -> Iterator[torch.Tensor]:
        """Every item's index in chunks of ``chunk_size``, with a progress bar (on a terminal)."""
        device = getattr(self.inputs, self.input_keys[0]).device
        chunks = torch.arange(self._n_items(), device=device).split(self.chunk_size)
        yield from tqdm(chunks, desc=desc, unit="chunk", leave=False, disable=None)

    def _encode_chunk(self, items: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.tower_cache is not None:  # the heads need the presence masks only
            rows = self._input_rows(items, PRESENCE_KEYS)
            towers = {m: t[items] for m, t in self.tower_cache.named_buffers()}
            out = self.encoder.project(towers, rows)
        else:
            rows = self._input_rows(items)
            out = self.encoder(rows)
        for modality in INPUT_MODALITIES:
            if modality in out and f"{modality}_present" in rows:
                present = rows[f"{modality}_present"].to(out[modality].dtype)
                out[modality] = out[modality] * present[:, None]
        return tuple(out[m] for m in self.modalities)

    def forward(self, items: torch.Tensor) -> ItemFeatures:
        """``items`` ``[n]`` -> ``{modality: [n, d_m]}`` with gradients, chunk by chunk."""
        return self._encode(items.split(self.chunk_size))

    def _encode(self, parts: Iterable[torch.Tensor]) -> ItemFeatures:
        chunks = []
        for part in parts:
            if self.activation_checkpointing and torch.is_grad_enabled():
                chunks.append(checkpoint(self._encode_chunk, part, use_reentrant=False))
            else:
                chunks.append(self._encode_chunk(part))
        return {m: torch.cat([c[i] for c in chunks]) for i, m in enumerate(self.modalities)}

    def encode_all(self) -> ItemFeatures:
        """Every item's outputs ``{modality: [I, d_m]}`` in float32, without gradients, with
        the encoder in eval mode."""
        with self._inference():
            feats = self._encode(self._all_chunks("encode items"))
        return {m: t.float() for m, t in feats.items()}

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """The encoder in eval mode, without gradients, for the block."""
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.encoder.train(was_training)


class FeatureBank(nn.Module):
    """Every item's latest encoder outputs ``{modality: [I, d_m]}``, detached (DESIGN.md).

    The tables are persistent buffers: checkpoints and ``best.pt`` hold them, so a resumed run
    starts from the bank it had.
    """

    def __init__(self, initial: ItemFeatures) -> None:
        super().__init__()
        self.modalities = list(initial)
        for modality, tensor in initial.items():
            self.register_buffer(modality, tensor.detach().float().clone())

    def tables(self) -> ItemFeatures:
        return {m: getattr(self, m) for m in self.modalities}

    def write(self, feats: ItemFeatures) -> None:
        """Replace every row with ``feats`` (``{modality: [I, d_m]}``)."""
        for modality in self.modalities:
            getattr(self, modality).copy_(feats[modality])

    def view(self, items: torch.Tensor, fresh: ItemFeatures) -> ItemFeatures:
        """The bank with the rows of ``items`` ``[n]`` replaced by ``fresh`` ``{m: [n, d_m]}``:
        ``[I, d_m]`` tensors whose gradient reaches ``fresh`` only (out of place; the bank
        itself is unchanged)."""
        return {
            m: table.index_put((items,), fresh[m].to(table.dtype))
            for m, table in self.tables().items()
        }


def _refresh_interval(refresh: str) -> int:
    """``step`` -> 1, ``"N"`` -> N, ``epoch`` / ``never`` -> 0 (handled apart)."""
    if refresh == "step":
        return 1
    return int(refresh) if refresh.isdigit() else 0


class EndToEnd(StepModule):
    """Encoder + feature bank + recommender; ``forward(batch)`` is the recommendation loss.

    Each step encodes the batch's distinct items once (positives and negatives, ``n <= 2B``),
    writes them into the bank's view, and gives the view to the recommender: gradients reach the
    encoder's trainable parameters through the batch's rows.

    Args:
        recommender: the model, built on the bank's initial features.
        encoding: the encoder over the catalogue.
        config: the run's encoder section (learning rate, refresh schedule, ...).
        initial: every item's features at the start (``encoding.encode_all()`` if ``None``).
    """

    def __init__(
        self,
        recommender: Recommender,
        encoding: ItemEncoding,
        config: EncoderConfig,
        initial: ItemFeatures | None = None,
    ) -> None:
        super().__init__()
        self.recommender = recommender
        self.encoding = encoding
        self.config = config
        self.bank = FeatureBank(initial if initial is not None else encoding.encode_all())
        self.every_steps = _refresh_interval(config.refresh)
        self.stale = True  # whether the encoder changed since the bank was last written
        if config.align_weight > 0:
            missing = {"image", "text"} - set(encoding.modalities)
            if missing:
                raise ConfigError(
                    f"encoder.align_weight aligns image and text vectors, but encoder.modalities "
                    f"leaves out {sorted(missing)}; add them or set align_weight=0"
                )
            self.encoder.contrastive_scale().requires_grad_(True)  # a learnable temperature

    @property
    def encoder(self) -> ItemEncoder:
        return self.encoding.encoder

    def train(self, mode: bool = True) -> EndToEnd:
        super().train(mode)
        if not self.config.dropout:
            self.encoder.eval()  # outputs on an item do not depend on the batch
        return self

    def forward(self, batch: Batch) -> torch.Tensor:
        items = torch.unique(torch.cat([batch.pos_items, batch.neg_items]))  # [n]
        fresh = self.encoding(items)  # {m: [n, d_m]}, with gradients
        loss = self.recommender.loss(batch, self.bank.view(items, fresh))
        if self.config.align_weight > 0:
            loss = loss + self.config.align_weight * self._alignment(items, fresh)
        return loss

    def _alignment(self, items: torch.Tensor, fresh: ItemFeatures) -> torch.Tensor:
        """Image-text contrastive loss over the batch's items that have both (the journal
        version's alignment term; the other items of the batch are the negatives)."""
        both = self.encoding.presence(items, ("image", "text"))  # [n] bool
        if int(both.sum()) < 2:
            return fresh["image"].sum() * 0.0  # nothing to contrast; keeps the graph whole
        scale = self.encoder.contrastive_scale()
        return contrastive_loss(fresh["image"][both], fresh["text"][both], scale)[0]

    def item_features(self) -> ItemFeatures:
        """Every item encoded now (no gradients); the bank takes them unless it never
        refreshes."""
        feats = self.encoding.encode_all()
        if self.config.refresh != "never":
            self.refresh(feats)
        return feats

    def refresh(self, feats: ItemFeatures | None = None) -> None:
        """Re-encode every item into the bank (or write ``feats``, already encoded)."""
        self.bank.write(feats if feats is not None else self.encoding.encode_all())
        self.stale = False

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """The recommender's group (``lr``, ``weight_decay``) and the encoder's trainable
        parameters' (the encoder section's ``lr``, ``weight_decay``, ``warmup_epochs``)."""
        groups = super().param_groups(lr, weight_decay)
        encoder_params = [p for p in self.encoder.parameters() if p.requires_grad]
        if encoder_params:
            groups.append(
                {
                    "params": encoder_params,
                    "lr": self.config.lr,
                    "weight_decay": self.config.weight_decay,
                    "warmup_epochs": self.config.warmup_epochs,
                }
            )
        return groups

    def on_epoch_start(self, epoch: int) -> None:
        if self.config.refresh == "epoch" and self.stale:
            self.refresh()
        super().on_epoch_start(epoch)  # the recommender's hook reads the refreshed bank

    def on_step_end(self, step: int) -> None:
        self.stale = self.stale or any(p.requires_grad for p in self.encoder.parameters())
        if self.every_steps and step % self.every_steps == 0:
            self.refresh()

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.stale = True  # re-encode at the next epoch: the same values, recomputed
        return result  # a tower cache stays valid: the towers it caches never train

"""The item-encoder contract: catalog items in, one vector per modality out.

The paper (Yi et al., "Large Multi-modal Encoders for Recommendation", arXiv 2310.20343, §3)
represents an item by an image vector and a text vector from a pre-trained encoder, used frozen,
fine-tuned on the dataset's (image, text) pairs, or trained end to end with the recommender. One
:class:`ItemEncoder` serves all three paradigms:

* ``preprocessor`` (:class:`~lmmrec.encoders.preprocessing.Preprocessor`): picklable, runs in
  DataLoader workers, turns an :class:`~lmmrec.encoders.preprocessing.ItemBatch` into tensors;
* ``forward(inputs) -> {modality: [B, D_m]}``: differentiable; it computes every output modality
  whose inputs are present (``"image"``, ``"text"``, and for encoders that fuse, ``"fused"``);
* ``output_dims()``: ``{modality: D_m}``;
* ``apply_strategy(name)``: which parameters train (below);
* ``describe()``: provenance for feature-set manifests;
* ``save(folder)``: the encoder as a folder that :func:`lmmrec.encoders.load_encoder` rebuilds
  (spec, build options, LoRA adapters and every parameter a strategy or objective trained;
  :mod:`lmmrec.encoders.saved`);
* ``contrastive_scale()``: the learnable log-temperature of the image-text contrastive loss.

Training strategies (``apply_strategy``), each a set of trainable parameters; everything else gets
``requires_grad=False``:

========== ==============================================================================
frozen     nothing trains
projection the projection heads into the output space (an error if the encoder has none)
top:N      the projection heads, the modules between the last layer and the output (final
           norms, conv heads), and the top ``N`` layers of every tower
lora:R     the projection heads plus rank-``R`` LoRA adapters (Hu et al., ICLR 2022,
           arXiv 2106.09685; ``alpha = 2R``, no dropout) injected with peft into the query and
           value projections of every attention layer; the base weights stay frozen. Adapters,
           once injected, stay (frozen under other strategies; B starts at zero, so a fresh
           adapter changes nothing)
full       every parameter (unused ones, such as CLIP's ``logit_scale``, get no gradient)
========== ==============================================================================

Dimensions: B batch, D_m output size of modality m.
"""

from __future__ import annotations

import contextlib
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from lmmrec.encoders.objectives import INIT_LOGIT_SCALE
from lmmrec.encoders.preprocessing import Preprocessor
from lmmrec.errors import ConfigError

INPUT_MODALITIES = ("image", "text")
STRATEGIES = ("frozen", "projection", "top:N", "lora:R", "full")
# last name component of the attention query/value projections across transformers models
# (CLIP/ViT-style q_proj/v_proj, BERT/ViT query/value, DistilBERT q_lin/v_lin, T5/MPNet q/v)
QUERY_VALUE_NAMES = frozenset({"q_proj", "v_proj", "query", "value", "q_lin", "v_lin", "q", "v"})


@dataclass(frozen=True)
class Strategy:
    """A parsed strategy name: ``kind`` in frozen/projection/top/lora/full and its ``n``."""

    kind: str
    n: int = 0

    @classmethod
    def parse(cls, name: str) -> Strategy:
        kind, _, value = name.strip().lower().partition(":")
        if kind in ("frozen", "projection", "full") and not value:
            return cls(kind)
        if kind in ("top", "lora") and value.isdigit() and int(value) > 0:
            return cls(kind, int(value))
        raise ConfigError(
            f"unknown training strategy {name!r}; use one of {', '.join(STRATEGIES)} "
            "(N layers, R LoRA rank: positive integers)"
        )


@dataclass
class Layout:
    """Where an encoder's trainable parts are, for :meth:`ItemEncoder.apply_strategy`.

    Attributes:
        towers: per tower (e.g. ``"image"``, ``"text"``), its repeated layers, bottom to top.
        tops: modules between the last layer and the output (final norms, conv heads).
        projections: heads that project into the output space.
    """

    towers: dict[str, Sequence[nn.Module]] = field(default_factory=dict)
    tops: list[nn.Module] = field(default_factory=list)
    projections: list[nn.Module] = field(default_factory=list)

    def merged(self, other: Layout, prefix: str) -> Layout:
        """This layout plus ``other``'s, whose towers are renamed ``<prefix>.<tower>``."""
        return Layout(
            towers=self.towers | {f"{prefix}.{k}": v for k, v in other.towers.items()},
            tops=self.tops + other.tops,
            projections=self.projections + other.projections,
        )


class ItemEncoder(nn.Module, ABC):
    """Base class of item encoders (module docstring). Subclasses set ``name`` and implement
    ``forward``, ``output_dims``, ``layout`` and ``from_spec``, and set ``self.preprocessor``.

    Attributes:
        spec: the spec string the encoder was built from (``"clip:/models/clip-b16"``).
        preprocessor: picklable preprocessing of :class:`ItemBatch` es.
        default_modalities: what feature extraction stores when not told otherwise.
        temperature_name: the parameter that holds the encoder's own contrastive
            log-temperature (CLIP's ``model.logit_scale``), or None: then
            :meth:`contrastive_scale` adds one.
        build_options: the keyword options the encoder was built with (``registry.build``).
        strategy: the last strategy applied (None: none yet).
        lineage: where the weights come from when they are not the spec's own: set by
            :func:`~lmmrec.encoders.saved.load_encoder` (base weights hash, fine-tuning config,
            checkpoint hash) and by fine-tuning; recorded in feature-set manifests.
    """

    name: ClassVar[str]
    default_modalities: ClassVar[tuple[str, ...]] = INPUT_MODALITIES
    temperature_name: ClassVar[str | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.spec = self.name
        self.preprocessor = Preprocessor()
        self.lora_rank: int | None = None
        self.build_options: dict[str, Any] = {}
        self.strategy: str | None = None
        self.lineage: dict[str, Any] | None = None
        self.base_weights_hash: str | None = None
        # ids of the parameters a strategy or an objective made trainable (they survive the
        # renaming that LoRA injection does); save() writes these
        self._tuned: set[int] = set()

    @classmethod
    @abstractmethod
    def from_spec(cls, arg: str | None, **options: Any) -> ItemEncoder:
        """Build from the part of a spec after ``name:`` (``None`` if absent) and options."""

    @abstractmethod
    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Input tensors (``preprocessing`` keys) -> ``{modality: [B, D_m]}`` for every output
        modality whose inputs are present."""

    @abstractmethod
    def output_dims(self) -> dict[str, int]:
        """``{modality: D_m}`` of every output modality the encoder can produce."""

    @abstractmethod
    def layout(self) -> Layout:
        """The encoder's towers, tops and projection heads."""

    @property
    def modalities(self) -> list[str]:
        return list(self.output_dims())

    def preprocess(self, items: Any) -> dict[str, torch.Tensor]:
        """Shorthand for ``self.preprocessor(items)``."""
        return self.preprocessor(items)

    @staticmethod
    def inputs_of(modality: str) -> tuple[str, ...]:
        """Input modalities an output modality is computed from (fused outputs need both)."""
        return (modality,) if modality in INPUT_MODALITIES else INPUT_MODALITIES

    def apply_strategy(self, strategy: str) -> list[nn.Parameter]:
        """Set ``requires_grad`` as ``strategy`` says (module docstring); return the trainable
        parameters.

        Raises:
            ConfigError: unknown strategy; ``projection`` without projection heads; ``top:N``
                with more layers than a tower has; ``lora:R`` without attention layers, or with
                another rank than the adapters already injected.
        """
        parsed = Strategy.parse(strategy)
        layout = self.layout()
        trainable = self._trainable_modules(parsed, layout)
        self.remember_base_weights()
        if parsed.kind == "lora":
            self.add_lora(parsed.n, layout)
        self.requires_grad_(parsed.kind == "full")
        for module in trainable:
            module.requires_grad_(True)
        if parsed.kind == "lora":
            for name, parameter in self.named_parameters():
                if "lora_" in name:
                    parameter.requires_grad_(True)
        self.strategy = strategy.strip().lower()
        return self.mark_tuned(p for p in self.parameters() if p.requires_grad)

    def mark_tuned(self, parameters: Iterable[nn.Parameter]) -> list[nn.Parameter]:
        """Record ``parameters`` as trained, so :meth:`save` writes them; returns them."""
        parameters = list(parameters)
        self._tuned.update(id(p) for p in parameters)
        return parameters

    def tuned_names(self) -> list[str]:
        """Names of the parameters any strategy or objective has trained (LoRA adapters
        included); every parameter when none was ever chosen (the encoder as built trains all)."""
        if self.strategy is None and not self._tuned:
            return [name for name, _ in self.named_parameters()]
        return [
            name for name, p in self.named_parameters() if id(p) in self._tuned or "lora_" in name
        ]

    def remember_base_weights(self) -> str:
        """The weights hash of the encoder as its spec built it, computed before anything
        changes it (the first strategy, fine-tuning or a load) and kept for lineage."""
        if self.base_weights_hash is None:
            self.base_weights_hash = weights_hash(self.state_dict().items())
        return self.base_weights_hash

    def contrastive_scale(self) -> nn.Parameter:
        """The learnable log-temperature ``t`` of the image-text contrastive loss
        (:func:`~lmmrec.encoders.objectives.contrastive_loss` multiplies cosines by ``exp(t)``).

        The encoder's own when it has one (``temperature_name``: CLIP's ``logit_scale``,
        VLMo's), else a parameter ``logit_scale`` added on first use at ``log(1 / 0.07)``; it
        is then part of the encoder's state and saved with it.
        """
        if self.temperature_name is not None:
            return cast(nn.Parameter, self.get_parameter(self.temperature_name))
        if not hasattr(self, "logit_scale"):
            self.remember_base_weights()
            device = next((p.device for p in self.parameters()), torch.device("cpu"))
            self.logit_scale = nn.Parameter(torch.tensor(INIT_LOGIT_SCALE, device=device))
        return cast(nn.Parameter, self.logit_scale)

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Recompute layer activations in the backward pass instead of keeping them (less
        memory, about a third more compute): every transformers model inside that supports it.

        Raises:
            ConfigError: no part of the encoder supports it.
        """
        from transformers import PreTrainedModel

        models = [
            m
            for m in self.modules()
            if isinstance(m, PreTrainedModel) and m.supports_gradient_checkpointing
        ]
        if not models:
            raise ConfigError(
                f"encoder {self.spec!r} has no layers that support activation checkpointing"
            )
        for model in models:
            if enabled:
                model.activation_checkpointing_enable({"use_reentrant": False})
            else:
                model.activation_checkpointing_disable()

    def save(self, folder: str | Path, *, lineage: dict[str, Any] | None = None) -> Path:
        """Write the encoder to ``folder`` (atomically): ``encoder.json`` (spec, build options,
        strategy, LoRA rank, lineage, weights hash) and ``tensors.safetensors`` (the trained
        parameters, LoRA adapters and buffers). :func:`lmmrec.encoders.load_encoder` rebuilds
        it from the spec and checks that the weights are the same.

        Args:
            lineage: extra provenance to record (fine-tuning writes its config and scores).
        """
        from lmmrec.encoders.saved import save_encoder

        return save_encoder(self, Path(folder), lineage=lineage)

    def _trainable_modules(self, strategy: Strategy, layout: Layout) -> list[nn.Module]:
        """The modules ``strategy`` trains besides LoRA adapters (all of them for ``full``)."""
        if strategy.kind == "projection" and not layout.projections:
            raise ConfigError(
                f"encoder {self.spec!r} has no projection head; use top:N, lora:R or full"
            )
        if strategy.kind in ("frozen", "full"):
            return []
        if strategy.kind != "top":
            return list(layout.projections)
        modules = layout.projections + layout.tops
        for tower, layers in layout.towers.items():
            if strategy.n > len(layers):
                raise ConfigError(
                    f"strategy top:{strategy.n}: the {tower} tower of {self.spec!r} has only "
                    f"{len(layers)} layers; use top:{len(layers)} or full"
                )
            modules += layers[len(layers) - strategy.n :]
        return modules

    def add_lora(self, rank: int, layout: Layout | None = None) -> None:
        """Inject rank-``rank`` LoRA adapters (peft, alpha ``2 * rank``) into the modules that
        :meth:`_lora_targets` names; the same rank again is a no-op.

        Raises:
            ConfigError: adapters of another rank are already injected, or there is no target.
        """
        if self.lora_rank is not None:
            if self.lora_rank != rank:
                raise ConfigError(
                    f"encoder {self.spec!r} already has rank-{self.lora_rank} LoRA adapters; "
                    f"build a new encoder for rank {rank}"
                )
            return
        from peft import LoraConfig, inject_adapter_in_model

        targets = self._lora_targets(layout or self.layout())
        config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets)
        inject_adapter_in_model(config, self)
        self.lora_rank = rank

    def _lora_targets(self, layout: Layout) -> list[str]:
        """Names of the modules LoRA adapts: the query/value projections of the towers' layers."""
        in_layers = {
            id(m) for layers in layout.towers.values() for layer in layers for m in layer.modules()
        }
        targets = [
            name
            for name, module in self.named_modules()
            if isinstance(module, nn.Linear)
            and id(module) in in_layers
            and name.rpartition(".")[2] in QUERY_VALUE_NAMES
        ]
        if not targets:
            raise ConfigError(
                f"encoder {self.spec!r} has no attention query/value projections for LoRA; "
                "use top:N or full"
            )
        return targets

    def describe(self) -> dict[str, Any]:
        """Provenance for manifests: spec, class, weights hash, preprocessing, output dims, and
        the lineage of weights that are not the spec's own (a saved, fine-tuned encoder)."""
        description = {
            "spec": self.spec,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "weights_hash": weights_hash(self.state_dict().items()),
            "lora_rank": self.lora_rank,
            "preprocessing": self.preprocessor.describe(),
            "dims": self.output_dims(),
        }
        if self.lineage is not None:
            description["lineage"] = self.lineage
        return description


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide transformers' "Loading weights" progress bar while an encoder loads its weights (a
    fraction of a second each; the setting is restored after), so that long work keeps the
    only progress bars a user sees."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def fuse(
    image: torch.Tensor,
    text: torch.Tensor,
    image_present: torch.Tensor,
    text_present: torch.Tensor,
) -> torch.Tensor:
    """Joint vector: the L2-normalised mean of the L2-normalised vectors an item has.

    Args:
        image, text: ``[B, D]`` vectors in one shared space.
        image_present, text_present: ``[B]`` bool; an absent modality is left out, so an item
            with only a text gets its normalised text vector (all zeros if it has neither).

    Returns:
        ``[B, D]``.
    """
    weights = torch.stack([image_present, text_present], dim=1).to(image.dtype)  # [B, 2]
    stacked = torch.stack([F.normalize(image, dim=-1), F.normalize(text, dim=-1)], dim=1)
    return F.normalize((weights.unsqueeze(-1) * stacked).sum(dim=1), dim=-1)  # [B, D]


def find_layers(module: nn.Module) -> nn.ModuleList:
    """The repeated layers of a backbone: its largest ``ModuleList`` of same-class modules
    (transformer layers, CNN stages or blocks), by parameter count.

    Raises:
        ConfigError: the module has no such list.
    """
    best, best_size = None, -1
    for child in module.modules():
        if isinstance(child, nn.ModuleList) and len(child) and len({type(c) for c in child}) == 1:
            size = sum(p.numel() for p in child.parameters())
            if size > best_size:
                best, best_size = child, size
    if best is None:
        raise ConfigError(
            f"cannot find the layers of {type(module).__name__}: it holds no list of blocks"
        )
    return best


def weights_hash(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """Content hash (sha256, 16 hex digits) of named tensors: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]

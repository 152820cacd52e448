"""``lmmrec encode`` and ``lmmrec features``: item feature sets, a thin layer over
:func:`lmmrec.encoders.extract_features` and :func:`lmmrec.data.formats.mmrec.write_mmrec`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from lmmrec.errors import ConfigError

if TYPE_CHECKING:
    from lmmrec.data.dataset import Dataset
    from lmmrec.data.features import FeatureSet

features_app = typer.Typer(
    help="List and export item feature sets.", no_args_is_help=True, rich_markup_mode="markdown"
)
console = Console()

DatasetOption = Annotated[str, typer.Option(help="'demo' or a dataset folder")]


def _dataset_folder(source: str) -> Dataset:
    """The dataset ``source`` names; it must be an lmmrec dataset folder (features live there)."""
    from lmmrec.data import load_dataset

    dataset = load_dataset(source)
    if dataset.root is None or not (Path(dataset.root) / "dataset.json").is_file():
        raise ConfigError(
            f"{source} is not an lmmrec dataset folder, where feature sets are kept; build one "
            "first (lmmrec data table ... --out FOLDER, or Dataset.save)"
        )
    return dataset


def _default_name(spec: str) -> str:
    """``clip:/models/clip-b16`` -> ``clip-clip-b16``; ``sbert:default`` -> ``sbert``; a saved
    encoder folder ``runs/dual-ft`` -> ``dual-ft``."""
    from lmmrec.encoders import is_saved_encoder, parse_spec

    if is_saved_encoder(spec):
        folder = Path(spec).expanduser().resolve().name
        return re.sub(r"[^A-Za-z0-9._-]+", "-", folder).strip("-.") or "finetuned"
    name, arg = parse_spec(spec)
    if arg in (None, "default"):
        return name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{name}-{Path(arg.rstrip('/')).name}").strip("-.")


def _options(pairs: list[str]) -> dict[str, object]:
    """``["dim=128", "normalize=true"]`` -> ``{"dim": 128, "normalize": True}`` (YAML values)."""
    from lmmrec.training.config import _parse_override

    options = {}
    for pair in pairs:
        path, value = _parse_override(pair)
        options[".".join(path)] = value
    return options


def summary_table(features: FeatureSet) -> Table:
    """One row per modality: dimension, missing items and the policy applied."""
    manifest = features.manifest
    report = manifest.get("missing", {}).get("modalities", {})
    encoder = manifest.get("encoder", {})
    table = Table(
        title=f"feature set {features.name} ({encoder.get('spec', manifest.get('encoder'))})"
    )
    for column in ("modality", "dim", "missing items", "action"):
        table.add_column(column)
    for modality, dim in features.dims.items():
        entry = report.get(modality, {})
        table.add_row(modality, str(dim), str(entry.get("count", "-")), entry.get("action", "-"))
    return table


def encode(
    dataset: DatasetOption,
    encoder: Annotated[
        str,
        typer.Option(
            help="encoder spec (sbert:default, clip:FOLDER ...) or a saved encoder folder"
        ),
    ],
    modalities: Annotated[
        str | None, typer.Option(help="comma-separated outputs, e.g. image,text,fused")
    ] = None,
    name: Annotated[str | None, typer.Option(help="feature set name (default: from spec)")] = None,
    batch_size: Annotated[int, typer.Option(help="items per encoder call")] = 64,
    workers: Annotated[
        int | None, typer.Option(help="DataLoader processes (default: 1 if images, else 0)")
    ] = None,
    missing: Annotated[str, typer.Option(help="missing modality: zeros, mean or skip")] = "zeros",
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, bf16 or auto")] = "fp32",
    option: Annotated[
        list[str] | None, typer.Option(help="encoder option KEY=VALUE (repeatable), e.g. dim=128")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="re-extract even if up to date")] = False,
) -> None:
    """Encode every item of a dataset into a feature set stored in the dataset folder.

    A fine-tuned encoder folder (`lmmrec finetune --out FOLDER`) is accepted in place of a spec;
    the feature set's manifest then records its lineage.
    """
    from lmmrec.encoders import extract_features, load_encoder

    data = _dataset_folder(dataset)
    model = load_encoder(encoder, **_options(option or []))
    features = extract_features(
        data,
        model,
        name=name or _default_name(encoder),
        modalities=modalities.split(",") if modalities else None,
        batch_size=batch_size,
        num_workers=workers,
        missing=missing,  # type: ignore[arg-type]
        device=device,  # type: ignore[arg-type]
        precision=precision,  # type: ignore[arg-type]
        overwrite=overwrite,
    )
    console.print(summary_table(features))
    lineage = features.manifest.get("lineage")
    if lineage:
        tuned = lineage.get("finetune") or {}
        console.print(
            f"encoder adapted from {lineage.get('base_spec')} (base weights "
            f"{lineage.get('base_weights_hash')}, tensors {lineage.get('checkpoint_hash')})"
            + (
                f", fine-tuned on {tuned.get('dataset')} epoch {tuned.get('epoch')}"
                if tuned
                else ""
            )
        )
    timing = features.manifest["timing"]
    console.print(
        f"{timing['encoded_items']} items encoded in {timing['seconds']:.1f} s on "
        f"{timing['device']}; saved in {Path(data.root) / 'features' / features.name}"
    )


@features_app.command("list")
def list_features(
    source: Annotated[str, typer.Argument(help="'demo' or a dataset folder")],
) -> None:
    """The dataset's feature sets with their modalities and missing items."""
    from lmmrec.data import load_dataset

    data = load_dataset(source)
    if not data.features:
        console.print(f"dataset {data.name} has no feature sets; make one with `lmmrec encode`")
    for features in data.features.values():
        console.print(summary_table(features))


@features_app.command("export-mmrec")
def export_mmrec(
    dataset: DatasetOption,
    name: Annotated[str, typer.Option(help="feature set to export")],
    out: Annotated[Path, typer.Option(help="MMRec folder to write")],
) -> None:
    """Write the dataset and a feature set as an MMRec folder (image_feat.npy, text_feat.npy)."""
    from lmmrec.data import load_dataset
    from lmmrec.data.formats.mmrec import write_mmrec

    write_mmrec(load_dataset(dataset), out, feature_set=name)
    console.print(f"wrote {out}")

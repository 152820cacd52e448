"""``lmmrec data``: build dataset folders from raw sources, attach item content to MMRec folders,
and fill their image stores.

Each command is a thin layer over :mod:`lmmrec.data.formats.amazon`,
:func:`lmmrec.data.formats.table.read_table`, :func:`lmmrec.data.formats.attach.attach_items`
and :mod:`lmmrec.data.images`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from lmmrec.data.dataset import Dataset

data_app = typer.Typer(
    help="Build datasets from Amazon dumps or tables, attach item content to MMRec folders, "
    "download item images.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
console = Console()

Out = Annotated[Path, typer.Option("--out", "-o", help="dataset folder to write")]
KCore = Annotated[int, typer.Option(help="keep users and items with at least this many")]
Split = Annotated[str, typer.Option(help="random (MMRec 8:1:1 per user), temporal or loo")]
Seed = Annotated[int, typer.Option(help="seed of the random and leave-one-out splits")]
Name = Annotated[str | None, typer.Option(help="dataset name (default: the file's name)")]
MMRec = Annotated[Path | None, typer.Option(help="also write an MMRec folder here")]


def _summary(dataset: Dataset, out: Path, mmrec: Path | None) -> None:
    stats = dataset.statistics()
    console.print(
        f"wrote {out}: {stats['users']} users, {stats['items']} items, "
        f"{stats['interactions']} interactions (train {stats['train']}, valid {stats['valid']}, "
        f"test {stats['test']})" + (f"; MMRec folder {mmrec}" if mmrec else "")
    )


@data_app.command("amazon")
def amazon(
    reviews: Annotated[
        Path, typer.Argument(help="reviews (JSON lines) or ratings CSV, .gz or not")
    ],
    out: Out,
    meta: Annotated[Path | None, typer.Option(help="metadata file: item text and images")] = None,
    version: Annotated[str, typer.Option(help="release: auto, 2014, 2018 or 2023")] = "auto",
    k_core: KCore = 5,
    min_rating: Annotated[float | None, typer.Option(help="drop reviews rated lower")] = None,
    split: Split = "random",
    seed: Seed = 2022,
    text_fields: Annotated[
        str, typer.Option(help="metadata fields joined into the item text, comma-separated")
    ] = "title,brand,categories,description",
    name: Name = None,
    mmrec: MMRec = None,
) -> None:
    """Ingest an Amazon review dump (2014, 2018 or 2023) into a dataset folder."""
    from lmmrec.data.formats.amazon import read_amazon

    data = read_amazon(
        reviews,
        meta,
        version=version,  # type: ignore[arg-type]  # checked by read_amazon
        k_core=k_core,
        min_rating=min_rating,
        split=split,  # type: ignore[arg-type]  # checked by make_split
        seed=seed,
        text_fields=[f.strip() for f in text_fields.split(",") if f.strip()],
        name=name,
    )
    data.save(out, mmrec=mmrec)
    statistics = data.dataset.info["statistics"]
    _summary(data.dataset, out, mmrec)
    console.print(
        f"release {data.dataset.info['release']}: {statistics['records_read']} records read, "
        f"{statistics['items_with_text']} items with text, "
        f"{statistics['items_with_image_url']} with an image URL"
    )


@data_app.command("table")
def table(
    path: Annotated[Path, typer.Argument(help="interactions: .csv, .tsv or .parquet")],
    out: Out,
    user_col: Annotated[str, typer.Option(help="column of user ids")] = "user",
    item_col: Annotated[str, typer.Option(help="column of item ids")] = "item",
    time_col: Annotated[str | None, typer.Option(help="column of timestamps")] = None,
    items: Annotated[Path | None, typer.Option(help="items table: text and image paths")] = None,
    item_key: Annotated[str | None, typer.Option(help="item id column of --items")] = None,
    text_col: Annotated[str, typer.Option(help="text column of --items ('' for none)")] = "text",
    image_col: Annotated[str, typer.Option(help="image column of --items ('' for none)")] = "image",
    k_core: KCore = 5,
    split: Split = "random",
    seed: Seed = 2022,
    name: Name = None,
    mmrec: MMRec = None,
) -> None:
    """Turn an interaction table (and optional items table) into a dataset folder."""
    from lmmrec.data.formats.mmrec import write_mmrec
    from lmmrec.data.formats.table import read_table

    dataset = read_table(
        path,
        user_col=user_col,
        item_col=item_col,
        time_col=time_col,
        items_path=items,
        item_key=item_key,
        text_col=text_col or None,
        image_col=image_col or None,
        k_core=k_core,
        split=split,  # type: ignore[arg-type]  # checked by make_split
        seed=seed,
        name=name,
    )
    dataset.save(out)
    if mmrec is not None:
        write_mmrec(dataset, mmrec)
    _summary(dataset, out, mmrec)


@data_app.command("attach-items")
def attach_items(
    folder: Annotated[Path, typer.Argument(help="MMRec folder (<name>.inter, i_id_mapping.csv)")],
    items: Annotated[
        Path,
        typer.Option(
            help="items table (.csv/.tsv/.parquet) or Amazon metadata (meta_*.json[.gz], JSONL)"
        ),
    ],
    id_column: Annotated[
        str | None,
        typer.Option(help="column/key of the raw item id [default: asin; metadata: parent_asin]"),
    ] = None,
    text_columns: Annotated[
        str | None,
        typer.Option(
            help="comma-separated columns joined into the text [default: text; metadata: "
            "title,brand,categories,description]"
        ),
    ] = None,
    image_column: Annotated[
        str | None,
        typer.Option(help="column/key of image URLs or paths [default: image; metadata: auto]"),
    ] = None,
    name: Annotated[str | None, typer.Option(help="the .inter file's stem, if several")] = None,
) -> None:
    """Attach item texts and images to an MMRec folder, joined through i_id_mapping.csv."""
    from lmmrec.data.formats.attach import attach_items as attach

    report = attach(
        folder,
        items,
        id_column=id_column,
        text_columns=None
        if text_columns is None
        else [c.strip() for c in text_columns.split(",") if c.strip()],
        image_column=image_column,
        name=name,
    )
    console.print(
        f"{folder}: {report.matched} of {report.n_items} items found in {items} "
        f"({report.with_text} with text, {report.with_image_url} with an image URL, "
        f"{report.with_image_file} with an image file)",
        highlight=False,
    )
    if report.unmatched:
        first = ", ".join(report.unmatched[:5])
        more = ", ..." if len(report.unmatched) > 5 else ""
        console.print(
            f"{len(report.unmatched)} items not found (no text, no image): {first}{more}",
            highlight=False,
        )
    if report.missing_image_files:
        console.print(
            f"{report.missing_image_files} image paths do not exist (those items get no image)",
            highlight=False,
        )
    if report.with_image_url:
        kept = f"{report.kept_images} already downloaded; " if report.kept_images else ""
        console.print(f"{kept}download the images with: lmmrec data images {folder}")


@data_app.command("images")
def images(
    dataset: Annotated[Path, typer.Argument(help="dataset folder")],
    from_folder: Annotated[
        Path | None, typer.Option(help="import images from this folder instead of downloading")
    ] = None,
    by: Annotated[str, typer.Option(help="--from-folder names: raw_id or index")] = "raw_id",
    copy: Annotated[bool, typer.Option(help="copy --from-folder files, never hard-link")] = False,
    workers: Annotated[int, typer.Option(help="concurrent downloads")] = 16,
    per_host_rate: Annotated[float, typer.Option(help="requests/s per host; 0: no limit")] = 20.0,
    retries: Annotated[int, typer.Option(help="retries after timeouts, 429 and 5xx")] = 4,
    timeout: Annotated[float, typer.Option(help="seconds to wait for a server")] = 10.0,
    min_size: Annotated[int, typer.Option(help="smallest width and height in pixels")] = 32,
    retry_failed: Annotated[
        bool, typer.Option(help="also retry items that failed for good before")
    ] = False,
) -> None:
    """Download the dataset's item images (resumable), or import a folder of images."""
    from lmmrec.data.images import download_images, import_image_folder

    if from_folder is not None:
        report = import_image_folder(
            dataset,
            from_folder,
            by=by,  # type: ignore[arg-type]  # checked by import_image_folder
            copy=copy,
            min_size=min_size,
            progress=True,
        )
    else:
        report = download_images(
            dataset,
            workers=workers,
            per_host_rate=per_host_rate or None,
            retries=retries,
            timeout=timeout,
            min_size=min_size,
            retry_failed=retry_failed,
            progress=True,
        )
    summary = Table(title=f"images of {dataset}")
    summary.add_column("status")
    summary.add_column("items", justify="right")
    for status, count in report.counts.items():
        summary.add_row(status, str(count))
    console.print(summary)
    console.print(
        f"{report.reused} already stored, {report.skipped} failed before and skipped, "
        f"{report.requests} requests in {report.seconds:.1f} s; manifest: {report.manifest}"
    )

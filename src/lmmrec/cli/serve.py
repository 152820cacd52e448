"""``lmmrec export RUN_DIR BUNDLE`` and ``lmmrec serve BUNDLE``: thin calls into lmmrec.serving."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lmmrec.errors import ConfigError

console = Console()


def export(
    run_dir: Annotated[Path, typer.Argument(help="a finished run directory")],
    bundle: Annotated[Path, typer.Argument(help="the bundle folder to write (replaced if there)")],
    encoder: Annotated[
        str | None,
        typer.Option(
            help="spec or saved folder of the encoder that made the run's features, when it "
            "cannot be found from their manifest (new items are encoded with it)"
        ),
    ] = None,
    placement: Annotated[
        str,
        typer.Option(
            help="how new items get vectors: map (a ridge map from item features to the learned "
            "item vectors, fitted on the catalogue; any model trained with features) or model "
            "(the model's own content part: vbpr, freedom, bm3)"
        ),
    ] = "map",
    place_cold: Annotated[
        bool,
        typer.Option(
            help="give catalogue items without training interactions their content vectors too "
            "(the model learned theirs only as negatives)"
        ),
    ] = True,
) -> None:
    """Write a run's serving bundle (vectors, id maps, seen items, catalogue, manifest).

    For runs trained with item features the bundle also holds the item encoder and the content
    head that place new items."""
    from lmmrec.serving import export_bundle, load_bundle

    path = export_bundle(
        run_dir, bundle, encoder=encoder, placement=placement, place_cold=place_cold
    )
    manifest = load_bundle(path).manifest
    console.print(
        f"bundle {path}: {manifest['model']} on {manifest['dataset']}, "
        f"{manifest['n_users']} users x {manifest['n_items']} items, {manifest['dim']}-d"
    )
    content = manifest.get("content")
    if content:
        how = "the model's content part"
        if content.get("placement") == "map":
            how = f"a ridge map (penalty {content['ridge']:g}, by {content['selected_by']})"
        console.print(
            f"new items: encoded with {content['encoder']['spec']}, placed by {how} (POST /items)"
        )
        placed = manifest.get("cold_items", {}).get("placed_by_content", 0)
        if placed:
            console.print(f"{placed} catalogue items without training interactions placed so too")
    else:
        console.print(f"new items cannot be added: {manifest.get('no_content')}")


def serve(
    bundle: Annotated[Path, typer.Argument(help="a bundle folder (`lmmrec export`)")],
    host: Annotated[str, typer.Option(help="address to bind; 0.0.0.0 exposes the service")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    index: Annotated[str, typer.Option(help="exact (default) or faiss (approximate)")] = "exact",
    nprobe: Annotated[int, typer.Option(help="faiss: clusters searched per query")] = 16,
    threads: Annotated[
        int, typer.Option(help="torch/faiss threads; 1 suits batched small requests")
    ] = 1,
    token_file: Annotated[
        Path | None,
        typer.Option(
            help="file holding the token that writes (POST /items) must send as "
            "'Authorization: Bearer TOKEN' (default: $LMMREC_SERVE_TOKEN; neither: writes open)"
        ),
    ] = None,
    max_image_bytes: Annotated[
        int, typer.Option(min=1, help="largest image a write may send, in bytes once decoded")
    ] = 8 * 1024 * 1024,
    max_text_chars: Annotated[
        int, typer.Option(min=1, help="longest text a write may send, in characters")
    ] = 10_000,
    max_request_bytes: Annotated[
        int, typer.Option(min=1, help="largest write request body, in bytes")
    ] = 64 * 1024 * 1024,
) -> None:
    """Serve a bundle over HTTP (FastAPI + uvicorn); OpenAPI docs at /docs.

    Reads are open; items added or updated with POST /items are journaled in the bundle folder."""
    try:
        from lmmrec.serving.api import read_token
        from lmmrec.serving.api import serve as run_server
        from lmmrec.serving.writes import WriteLimits
    except ImportError as error:
        raise ConfigError(
            f"lmmrec serve needs the serve extra ({error.name} is missing): "
            "pip install 'lmmrec[serve]'"
        ) from error
    token = None if token_file is None else read_token(token_file)
    limits = WriteLimits(
        max_image_bytes=max_image_bytes,
        max_text_chars=max_text_chars,
        max_request_bytes=max_request_bytes,
    )
    run_server(
        bundle,
        host=host,
        port=port,
        index=index,
        nprobe=nprobe,
        threads=threads,
        token=token,
        limits=limits,
        announce=console.print,
    )


def register_serving(app: typer.Typer) -> None:
    """Add ``export`` and ``serve`` to the ``lmmrec`` command."""
    app.command()(export)
    app.command()(serve)

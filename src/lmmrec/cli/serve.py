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
) -> None:
    """Write a run's serving bundle: final vectors, raw id maps, seen items, catalogue, manifest."""
    from lmmrec.serving import export_bundle, load_bundle

    path = export_bundle(run_dir, bundle)
    manifest = load_bundle(path).manifest
    console.print(
        f"bundle {path}: {manifest['model']} on {manifest['dataset']}, "
        f"{manifest['n_users']} users x {manifest['n_items']} items, {manifest['dim']}-d"
    )


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
) -> None:
    """Serve a bundle over HTTP (FastAPI + uvicorn); OpenAPI docs at /docs."""
    try:
        from lmmrec.serving.api import serve as run_server
    except ImportError as error:
        raise ConfigError(
            f"lmmrec serve needs the serve extra ({error.name} is missing): "
            "pip install 'lmmrec[serve]'"
        ) from error
    console.print(f"serving {bundle} on http://{host}:{port} (docs: /docs); Ctrl-C stops")
    run_server(bundle, host=host, port=port, index=index, nprobe=nprobe, threads=threads)


def register_serving(app: typer.Typer) -> None:
    """Add ``export`` and ``serve`` to the ``lmmrec`` command."""
    app.command()(export)
    app.command()(serve)

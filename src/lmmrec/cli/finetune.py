"""``lmmrec finetune``: adapt an encoder on a dataset's (image, text) pairs, a thin layer over
:func:`lmmrec.encoders.finetune`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def retrieval_table(before: dict[str, float], after: dict[str, float], title: str) -> Table:
    """One row per retrieval metric: held-out value before and after fine-tuning."""
    table = Table(title=title, caption="i2t: image -> text, t2i: text -> image, @K: Recall@K")
    for column in ("held-out", "before", "after"):
        table.add_column(column, justify="left" if column == "held-out" else "right")
    for metric, value in before.items():
        table.add_row(metric, f"{value:.4f}", f"{after.get(metric, float('nan')):.4f}")
    return table


def finetune(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option(help="'demo', a dataset folder or a table with items")],
    encoder: Annotated[
        str, typer.Option(help="encoder spec (dual:default, clip:FOLDER ...) or a saved folder")
    ],
    out: Annotated[Path, typer.Option(help="folder to save the fine-tuned encoder in")],
    option: Annotated[
        list[str] | None, typer.Option(help="encoder option KEY=VALUE (repeatable), e.g. dim=128")
    ] = None,
    resume: Annotated[bool, typer.Option(help="continue an interrupted fine-tuning")] = True,
) -> None:
    """Fine-tune an encoder on the training items' (image, text) pairs and save it.

    Extra KEY=VALUE arguments set the config: strategy=lora:8 lr=1e-4 epochs=5 batch_size=64 ...

    Prints held-out image<->text retrieval before and after. Then: lmmrec encode --encoder OUT
    """
    from lmmrec.cli.encode import _options
    from lmmrec.data import load_dataset
    from lmmrec.encoders import finetune as run_finetune
    from lmmrec.encoders import finetune_config, is_saved_encoder, load_encoder, parse_spec

    config = finetune_config(overrides=list(ctx.args))
    options = _options(option or [])
    if not is_saved_encoder(encoder) and parse_spec(encoder)[0] == "vlmo":
        options.setdefault("pretraining_heads", True)  # ITM / MLM heads from the checkpoint
    data = load_dataset(dataset)
    model = load_encoder(encoder, **options)
    console.print(
        f"fine-tuning {model.spec} on {data.name} ({config.strategy}, lr {config.lr:g}, at most "
        f"{config.epochs} epochs, early stopping on held-out retrieval)"
    )
    began = time.perf_counter()
    result = run_finetune(model, data, config, out=out, resume=resume)
    seconds = time.perf_counter() - began
    pairs = result.pairs
    console.print(
        retrieval_table(
            result.before,
            result.after,
            f"{pairs['holdout']} held-out pairs; best epoch {result.best_epoch} of "
            f"{result.epochs_run}",
        )
    )
    console.print(
        f"trained on {pairs['train']} pairs; skipped {pairs['skipped']} of {pairs['items']} "
        f"training items (no image {pairs['no_image']}, no text {pairs['no_text']}, unreadable "
        f"image {pairs['unreadable_image']}); {seconds:.1f} s in all, {result.seconds:.1f} s "
        "in epochs"
    )
    console.print(f"saved in {out}; extract features with: lmmrec encode --encoder {out} ...")


def register_finetune(app: typer.Typer) -> None:
    """Add ``lmmrec finetune`` to ``app``; bare KEY=VALUE arguments reach the command."""
    settings = {"allow_extra_args": True, "ignore_unknown_options": True}
    app.command("finetune", context_settings=settings)(finetune)

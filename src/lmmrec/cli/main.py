"""The ``lmmrec`` command line: each command is a thin layer over the Python API."""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from lmmrec.cli.data import data_app
from lmmrec.cli.encode import encode, features_app
from lmmrec.cli.experiment import experiment_app
from lmmrec.cli.finetune import register_finetune
from lmmrec.cli.serve import register_serving
from lmmrec.errors import ConfigError, LmmrecError

if TYPE_CHECKING:
    from lmmrec.training.demo import DemoRow

app = typer.Typer(
    help="Multi-modal recommendation with large multi-modal encoders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
dataset_app = typer.Typer(
    help="Inspect datasets.", no_args_is_help=True, rich_markup_mode="markdown"
)
app.add_typer(dataset_app, name="dataset")
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
app.add_typer(experiment_app, name="experiment")
app.command()(encode)
register_finetune(app)
register_serving(app)
console = Console()
REPORTED = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


TRAINING_COLUMNS = ("epochs", "best epoch", "seconds")


def _metrics_table(
    title: str,
    rows: list[tuple[str, dict[str, float], list[str]]],
    columns: tuple[str, ...] = (),
    caption: str = "R@K: Recall@K, N@K: NDCG@K",
) -> Table:
    """Rows of ``(label, metrics, cells)``; ``cells`` fill the extra ``columns``."""
    table = Table(title=title, caption=caption)
    table.add_column("", no_wrap=True)
    for metric in REPORTED:  # recall@20 -> R@20: the table fits an 80-column terminal
        table.add_column(f"{metric[0].upper()}@{metric.split('@')[1]}", justify="right")
    for name in columns:
        table.add_column(name, justify="right")
    for label, metrics, cells in rows:
        table.add_row(label, *(f"{metrics[m]:.4f}" for m in REPORTED), *cells)
    return table


@app.command()
def demo(
    epochs: Annotated[
        int | None, typer.Option(help="cap on epochs per run [default: early stopping decides]")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            help="the experiment's output folder [default: runs/demo; --zoo: "
            "runs/experiments/defaults-demo]"
        ),
    ] = None,
    zoo: Annotated[
        bool, typer.Option(help="instead: every model with its defaults on frozen features")
    ] = False,
    models: Annotated[
        str | None,
        typer.Option(help="comma-separated models (paradigms: VBPR, FREEDOM; zoo: all)"),
    ] = None,
) -> None:
    """The three paradigms on the built-in demo shop: frozen, fine-tuned and end-to-end.

    BPR, then VBPR and FREEDOM fed by frozen MiniLM + EfficientNet features, by a dual encoder
    fine-tuned on the items, and by the dual encoder trained end to end; prints test metrics and
    training time per row.

    Runs the built-in experiment `demo` (learning rates chosen on validation; `lmmrec experiment
    report demo` reports it); finished runs are kept, so a repeat only prints. Features and the
    fine-tuned encoder are made once and kept in the demo folder. --zoo runs `defaults-demo`:
    every registered model with its default settings.
    """
    from lmmrec.data.demo import load_demo
    from lmmrec.training import demo as shop

    chosen = _model_names(models)
    console.print("[bold]lmmrec demo[/bold]: loading the built-in demo shop ...")
    stats = load_demo().statistics()
    console.print(
        f"{stats['users']} users, {stats['items']} items, {stats['interactions']} interactions "
        f"({stats['items_unseen_in_train']} items never seen in training)"
    )
    if zoo:
        experiment = shop.demo_experiment(output, _sorted(chosen), epochs, zoo=True)
        rows = shop.run_demo(experiment, console=console)
        shop.rank_new_items(rows)
        title = "demo: every model with its defaults, test at the best validation epoch"
        table_rows = [
            (
                row.model,
                row.test,
                [_new_items_cell(row), str(row.epochs), str(row.best_epoch), f"{row.seconds:.1f}"],
            )
            for row in rows
        ]
        caption = (
            f"R@K: Recall@K, N@K: NDCG@K; {NEW_ITEMS_CAPTION.replace('new R@20', 'new')}; ep: "
            "epochs run; best: the selected epoch; sec: training and validation"
        )
        console.print(_metrics_table(title, table_rows, ("new", "ep", "best", "sec"), caption))
    else:
        picked = tuple(m for m in shop.PARADIGM_MODELS if chosen is None or m in chosen)
        experiment = shop.demo_experiment(output, picked or shop.PARADIGM_MODELS, epochs)
        rows = shop.run_demo(experiment, console=console)
        shop.rank_new_items(rows)
        console.print(_paradigms_table(rows))
        frozen = [r for r in rows if r.paradigm == "frozen"]
        if frozen:
            bundle = experiment.output_dir / f"bundle-{frozen[0].model}"
            _serve_demo_run(Path(frozen[0].run_dir), bundle)
    console.print(f"run directories under {experiment.output_dir}/runs/")
    if output is None:
        console.print(f"report: lmmrec experiment report {'defaults-demo' if zoo else 'demo'}")


def _sorted(models: set[str] | None) -> tuple[str, ...] | None:
    return None if models is None else tuple(sorted(models))


def _serve_demo_run(run_dir: Path, bundle: Path) -> None:
    """The end of the demo: one run exported as a serving bundle (its new items placed from
    their content), and a request answered, new items marked."""
    from lmmrec.data.demo import load_demo
    from lmmrec.serving import Client, export_bundle

    export_bundle(run_dir, bundle)
    shop = load_demo()
    new = set(shop.item_ids[shop.cold_items()].astype(str))
    user = str(shop.user_ids[0])
    ranking = Client.open(bundle).recommend(user, k=5)
    items = ", ".join(s.item + (" (new)" if s.item in new else "") for s in ranking.items)
    console.print(f"bundle {bundle}: top 5 for user {user}: {items}")
    console.print(
        f"(the shop's {len(new)} new items are placed by a ridge map from their features; "
        f"serve it over HTTP with: lmmrec serve {bundle})"
    )


def _paradigms_table(rows: list[DemoRow]) -> Table:
    """The paradigms demo: model x paradigm -> Recall@20, NDCG@20, Recall@20 among the new
    items, lr, epochs, training time."""
    table = Table(
        title="demo: the three paradigms (test at the best validation epoch)",
        caption=f"R@20: Recall@20, N@20: NDCG@20; {NEW_ITEMS_CAPTION}; lr: chosen on "
        "validation; epochs: best/run; sec: training and validation",
    )
    columns = ("model", "paradigm", "R@20", "N@20", "new R@20", "lr", "epochs", "sec")
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "paradigm") else "right")
    for row in rows:
        lr = row.point.get("lr", row.point.get("train.lr"))
        table.add_row(
            row.model,
            row.paradigm,
            f"{row.test['recall@20']:.4f}",
            f"{row.test['ndcg@20']:.4f}",
            _new_items_cell(row),
            "default" if lr is None else f"{lr:g}",
            f"{row.best_epoch}/{row.epochs}",
            f"{row.seconds:.1f}",
        )
    return table


NEW_ITEMS_CAPTION = (
    "new R@20: Recall@20 among the shop's new items (no training interactions) ranked apart, "
    "placed from their content where the model can (random: about .14)"
)


def _new_items_cell(row: DemoRow) -> str:
    return "-" if row.new_items is None else f"{row.new_items['recall@20']:.4f}"


def _model_names(models: str | None) -> set[str] | None:
    """The names in ``--models`` (``None``: every model); unknown names are a ``ConfigError``."""
    from lmmrec.models import names

    if models is None:
        return None
    chosen = {m.strip() for m in models.split(",") if m.strip()}
    unknown = sorted(chosen - set(names()))
    if unknown or not chosen:
        raise ConfigError(
            f"--models {models!r}: unknown model(s) {unknown}; known: {', '.join(names())}"
        )
    return chosen


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    dataset: Annotated[str | None, typer.Option(help="'demo', a dataset folder or a table")] = None,
    model: Annotated[str | None, typer.Option(help="model name (see `lmmrec models`)")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML run configuration")] = None,
    resume: Annotated[bool, typer.Option(help="continue an interrupted run")] = True,
) -> None:
    """Train a model; extra KEY=VALUE arguments override configuration keys (e.g. lr=0.01)."""
    from lmmrec.training import load_run_config
    from lmmrec.training import train as train_run

    overrides = list(ctx.args)
    overrides += [f"dataset={dataset}"] if dataset else []
    overrides += [f"model={model}"] if model else []
    run_config = load_run_config(config, overrides)
    result = train_run(run_config, resume=resume)
    fit = result.fit
    console.print(
        _metrics_table(
            f"{run_config.model} on {run_config.dataset}: test at the best validation epoch",
            [
                (
                    run_config.model,
                    fit.test,
                    [str(fit.epochs_run), str(fit.best_epoch), f"{fit.seconds:.1f}"],
                )
            ],
            TRAINING_COLUMNS,
        )
    )
    console.print(f"run directory: {result.run_dir}")


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="a run directory")],
    pools: Annotated[
        bool,
        typer.Option(
            help="item cold-start evaluation: rank warm and cold items (those without training "
            "interactions) each in a pool of its own, cold items also placed from their content "
            "(by the model's content part and by a ridge map fitted on the warm items)"
        ),
    ] = False,
) -> None:
    """Re-evaluate a run's best checkpoint on the validation and test splits."""
    from lmmrec.training import evaluate_run, evaluate_run_pools

    if not pools:
        results = evaluate_run(run_dir)
        console.print(_metrics_table(str(run_dir), [(s, m, []) for s, m in results.items()]))
        return
    rows = [
        (
            f"{split} {r.pool}" + ("" if r.scored_by == "learned" else f" ({r.scored_by})"),
            r.metrics,
            [str(r.n_items), str(r.n_users)],
        )
        for split, results in evaluate_run_pools(run_dir).items()
        for r in results
    ]
    console.print(
        _metrics_table(
            f"{run_dir}: candidate pools",
            rows,
            ("items", "users"),
            "R@K: Recall@K, N@K: NDCG@K; warm / cold: items with / without training interactions, "
            "each ranked among its pool; cold items placed from their content alone by "
            "(content) the model's content part, (mapped) a ridge map fitted on the warm items",
        )
    )


@app.command()
def models() -> None:
    """List the registered models and their hyper-parameters."""
    from lmmrec.models import get, names

    table = Table(title="models")
    for column in ("name", "features", "hyper-parameters (defaults)"):
        table.add_column(column)
    for name in names():
        cls = get(name)
        params = ", ".join(f"{k}={v}" for k, v in cls.config_class().model_dump().items())
        if cls.default_lr is not None:
            params += f"; lr={cls.default_lr}"
        table.add_row(name, "yes" if cls.needs_features else "no", params)
    console.print(table)


@dataset_app.command("info")
def dataset_info(
    source: Annotated[str, typer.Argument(help="'demo', a folder or a table")],
) -> None:
    """Statistics of a dataset: users, items, interactions, sparsity, split sizes."""
    from lmmrec.data import load_dataset

    stats = load_dataset(source).statistics()
    table = Table(title=f"dataset {stats['name']}")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for key, value in stats.items():
        text = f"{value:.6f}" if isinstance(value, float) else str(value)
        table.add_row(key.replace("_", " "), text)
    console.print(table)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Entry point: user errors print one line and exit with status 1, no traceback.

    ``kill PID`` (SIGTERM, also what batch schedulers send before they kill a job) stops a
    command as Ctrl-C does: a run in progress is marked ``interrupted`` (it resumes from its last
    checkpoint), an MLflow run is closed, a Ray cluster started here is shut down.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    logging.basicConfig(format="%(message)s")
    logging.getLogger().handlers[0].setLevel(logging.WARNING)  # epoch lines go to log.txt only
    warnings.simplefilter("default")

    def format_warning(message: Warning | str, *_: object, **__: object) -> str:
        """One line, ``warning: <message>``, not ``path/module.py:71: UserWarning: ...``."""
        return f"warning: {' '.join(str(message).split())}\n"

    def show_warning(message: Warning | str, *_: object, **__: object) -> None:
        sys.stderr.write(format_warning(message))

    warnings.formatwarning = format_warning
    warnings.showwarning = show_warning
    try:
        app()
    except LmmrecError as error:
        Console(stderr=True).print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        sys.exit(1)

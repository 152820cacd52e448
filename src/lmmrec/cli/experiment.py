"""``lmmrec experiment run|status|report FILE``: thin calls into :mod:`lmmrec.experiments`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from lmmrec.errors import ConfigError

experiment_app = typer.Typer(
    help="Grids of datasets x encoders x paradigms x models x seeds, run and reported.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
console = Console()

FileArgument = Annotated[
    Path,
    typer.Argument(help="experiment YAML file (configs/*.yaml) or a built-in: demo, defaults-demo"),
]
VarOption = Annotated[
    list[str] | None,
    typer.Option("--var", help="NAME=VALUE for ${NAME} in the file (repeatable)"),
]
OnlyOption = Annotated[
    list[str] | None,
    typer.Option(
        "--only",
        help="only the cells picked by KEY=VALUE (dataset, model, encoder, paradigm, seed or a "
        "grid key) or a run name (repeatable: one key's values are alternatives)",
    ),
]


def _variables(pairs: list[str] | None) -> dict[str, str]:
    variables = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--var {pair!r} must look like NAME=VALUE")
        variables[name.strip()] = value
    return variables


def _state_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title)
    for state in counts:
        table.add_column(state, justify="right")
    table.add_row(*(str(v) for v in counts.values()))
    return table


@experiment_app.command("run")
def run(
    file: FileArgument,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list the runs, train none")] = False,
    var: VarOption = None,
    ray: Annotated[bool, typer.Option("--ray", help="fan the runs out on Ray")] = False,
    address: Annotated[
        str | None, typer.Option(help="an existing Ray cluster (implies --ray)")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch threads per run (runs x threads <= cores)")
    ] = None,
    only: OnlyOption = None,
) -> None:
    """Run every cell of the grid that has not finished (resumable; failed cells retried)."""
    from lmmrec.experiments import run_experiment
    from lmmrec.experiments.runner import state_counts

    result = run_experiment(
        file,
        dry_run=dry_run,
        variables=_variables(var),
        backend="ray" if (ray or address) else "local",
        address=address,
        threads=threads,
        console=console,
        only=only or (),
    )
    frame = result.results
    if dry_run:
        listed = frame[result.selected] if only else frame
        picked = f" ({len(listed)} picked by --only)" if only else ""
        console.print(
            f"[bold]{result.experiment.name}[/bold]: {_runs(len(frame))}{picked} (dry run)"
        )
        for row in listed.itertuples():
            console.print(_run_line(row), highlight=False, soft_wrap=True)
    console.print(_state_table(f"{result.experiment.name}: runs", state_counts(frame)))
    if not dry_run:
        console.print(
            f"{result.executed} run(s) executed in {result.seconds:.1f} s; results in "
            f"{result.experiment.output_dir}/results.parquet"
        )


@experiment_app.command("status")
def status(file: FileArgument, var: VarOption = None, only: OnlyOption = None) -> None:
    """Done / running / interrupted / failed / pending runs, with failed runs' one-line errors."""
    from lmmrec.experiments import experiment_status
    from lmmrec.experiments.runner import state_counts

    experiment, frame = experiment_status(file, _variables(var), only or ())
    console.print(_state_table(f"{experiment.name}: {_runs(len(frame))}", state_counts(frame)))
    unfinished = frame[frame["state"].isin(["failed", "running", "interrupted"])]
    for row in unfinished.itertuples():
        line = _run_line(row)
        if row.state == "failed":
            line += f"\n    {row.error}"
        console.print(line, highlight=False, soft_wrap=True)


def _runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


def _text(value: object) -> str:
    """A results-table value as text ('' for None and NaN)."""
    return "" if value is None or value != value else str(value)


def _run_line(row: Any) -> str:
    """``<run id>  <state>  dataset model [encoder paradigm] k=v ... seed=S``."""
    from lmmrec.experiments.report import point_text

    cell = " ".join(
        t
        for t in (_text(row.dataset), _text(row.model), _text(row.encoder), _text(row.paradigm))
        if t
    )
    run = _text(row.run_id) or "(after extraction)"
    return f"{run:<20} {row.state:<11} {cell} {point_text(row.point)} seed={row.seed}"


@experiment_app.command("report")
def report(
    file: FileArgument,
    out: Annotated[
        Path | None,
        typer.Option(help="folder for report.md/.html/.tex [default: <output_dir>/report]"),
    ] = None,
    var: VarOption = None,
    alpha: Annotated[float, typer.Option(help="significance level after Holm's correction")] = 0.05,
    pools: Annotated[
        bool,
        typer.Option(
            help="add item cold-start tables: warm and cold items (those without training "
            "interactions) ranked apart, cold ones also placed from their content (each run's "
            "best checkpoint evaluated once, kept in its pools.json)"
        ),
    ] = False,
) -> None:
    """Tables (selection on validation), paired significance, plots: Markdown, HTML, LaTeX."""
    from lmmrec.experiments import load_experiment
    from lmmrec.experiments.report import build_report, pool_cells, table_cells, write_report

    experiment = load_experiment(file, _variables(var))
    built = build_report(experiment, alpha=alpha, pools=pools)
    paths = write_report(built, out or experiment.output_dir / "report")
    for dataset_table in built.tables:
        headers, body = table_cells(built, dataset_table)
        keep = len(headers) - 2  # the seeds and selected-point columns stay in the files
        console.print(_rich_table(f"{built.name}: {dataset_table.dataset}", headers, body, keep))
        if dataset_table.pools is not None:
            title = f"{built.name}: {dataset_table.dataset}, item cold start (test)"
            console.print(_rich_table(title, *pool_cells(built, dataset_table)))
    console.print(
        f"test metrics at the point selected on validation {built.select}; bold: best; "
        "† t-test, ‡ Wilcoxon vs the baseline (Holm)"
    )
    for note in built.notes:
        console.print(note)
    console.print("written: " + ", ".join(str(p) for p in paths.values()))


def _rich_table(title: str, headers: list[str], body: list, keep: int | None = None) -> Table:
    """A report table for the terminal: three label columns, numbers right-aligned, the best
    in bold; the first ``keep`` columns."""
    table = Table(title=title, title_justify="left")
    for i, header in enumerate(headers[:keep]):
        table.add_column(header, justify="right" if i >= 3 else "left")
    for cells in body:
        table.add_row(
            *(
                f"[bold]{c.text}{c.marks}[/bold]" if c.best else c.text + c.marks
                for c in cells[:keep]
            )
        )
    return table

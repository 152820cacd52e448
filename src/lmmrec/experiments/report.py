"""Experiment reports: selection on validation, tables, paired significance, plots; MD/HTML/LaTeX.

Built from the results table and the run directories alone (nothing is re-run):

1. **Selection.** In every row of the comparison (dataset x model x encoder x paradigm) the grid
   point with the best *validation* value of the experiment's ``select`` metric, averaged over
   seeds, is chosen; test metrics never take part. Each run's epoch was already chosen on
   validation by the trainer, and its test metrics are those of that epoch.
2. **Tables.** Per dataset, the selected point's test metrics as mean ± std over seeds
   (sample std, n - 1), the best value per column in bold, the relative change of each row over
   the baseline row.
3. **Significance.** Each row against the baseline row on each metric, paired across test users
   (the per-user metrics of ``<run_dir>/test_users.npz``, averaged over seeds per user): a paired
   t-test and a Wilcoxon signed-rank test, each Holm-corrected over all the comparisons of the
   dataset. Marks: † t-test, ‡ Wilcoxon, adjusted p < alpha. Runs without per-user metrics are
   reported as not tested.
4. **Plots** (matplotlib, Agg, no display needed): grouped bars per model over encoder and
   paradigm, validation curves per epoch of the selected runs, training time per run.

:func:`write_report` writes ``report.md``, a self-contained ``report.html`` (plots embedded as
base64 PNG, no network needed), ``report.tex`` (booktabs tables) and ``figures/*.png``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmmrec.evaluation.stats import align_users, holm, paired_t_test, wilcoxon_test
from lmmrec.experiments.spec import Experiment
from lmmrec.io import atomic_path, read_json

TEST_USERS = "test_users.npz"
NONE = "—"  # encoder / paradigm of id-only models
GROUP = ["dataset", "model", "encoder", "paradigm"]
T_MARK, W_MARK = "†", "‡"


def short_metric(name: str) -> str:
    """``recall@20`` -> ``R@20`` (table headers)."""
    metric, _, k = name.partition("@")
    short = {"recall": "R", "ndcg": "N", "precision": "P", "map": "MAP", "hit": "HR"}
    return f"{short.get(metric, metric)}@{k}"


# ----------------------------------------------------------------------------- selection
def select_points(results: pd.DataFrame, select: str, metrics: list[str]) -> pd.DataFrame:
    """One row per (dataset, model, encoder, paradigm): the grid point whose mean *validation*
    ``select`` over its finished seeds is highest (ties: the first in file order).

    Columns: the group, ``point``, ``seeds``, ``points`` (grid points compared), ``valid`` (the
    selected mean), ``<metric>.mean`` / ``<metric>.std`` of the test metrics, ``run_dirs``.
    """
    done = results[results["state"] == "done"].copy()
    columns = [*GROUP, "point", "seeds", "points", "valid", "run_dirs"]
    columns += [f"{m}.{s}" for m in metrics for s in ("mean", "std")]
    valid_column = f"valid.{select}"
    if done.empty or valid_column not in done:
        return pd.DataFrame(columns=columns)
    done[["encoder", "paradigm"]] = done[["encoder", "paradigm"]].fillna(NONE)
    rows = []
    for group, runs in done.groupby(GROUP, sort=False):
        best_key, best_valid, n_points = None, -math.inf, 0
        for point, seeds in runs.groupby("point", sort=False):
            n_points += 1
            value = float(seeds[valid_column].mean())
            if value > best_valid:  # strict: the first of equal points wins
                best_key, best_valid = point, value
        chosen = runs[runs["point"] == best_key]
        row: dict[str, Any] = dict(zip(GROUP, group, strict=True))
        row.update(
            point=best_key,
            seeds=len(chosen),
            points=n_points,
            valid=best_valid,
            run_dirs=list(chosen["run_dir"]),
        )
        for metric in metrics:
            values = chosen.get(f"test.{metric}", pd.Series(dtype=float)).astype(float)
            row[f"{metric}.mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{metric}.std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def per_user_metric(run_dirs: list[str], metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(users, values)``: ``metric`` per test user averaged over the runs (seeds); ``None``
    when a run has no ``test_users.npz`` or lacks the metric."""
    merged: tuple[np.ndarray, np.ndarray] | None = None
    for run_dir in run_dirs:
        path = Path(run_dir) / TEST_USERS
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            if metric not in data.files or "users" not in data.files:
                return None
            users, values = data["users"], data[metric].astype(np.float64)
        if merged is None:
            merged = (users, values)
        else:
            common, a, b = align_users(merged[0], merged[1], users, values)
            merged = (common, a + b)
    if merged is None:
        return None
    return merged[0], merged[1] / len(run_dirs)


POOL_COLUMNS = {
    ("all", "learned"): "all",
    ("all", "content"): "all +content",
    ("all", "mapped"): "all +map",
    ("warm", "learned"): "warm",
    ("cold", "learned"): "cold",
    ("cold", "content"): "cold content",
    ("cold", "mapped"): "cold map",
}


def pool_table(
    rows: pd.DataFrame, metric: str, problems: list[str] | None = None
) -> pd.DataFrame | None:
    """Test ``metric`` of the selected rows in the item cold-start pools, means over seeds.

    Every run directory of a row is evaluated from its best checkpoint once
    (``evaluate_run_pools(cached=True)``, a ``pools.json`` beside it; progress shown); a run that
    cannot be (its dataset moved, say) is left out of the means, its one-line error appended to
    ``problems``. Columns: the group, one per :data:`POOL_COLUMNS` entry (NaN where a run has
    no such placement: no content part, or no features to map) and ``items.<pool>``; ``None``
    when no test interaction is with a cold item.
    """
    from tqdm.auto import tqdm

    from lmmrec.errors import LmmrecError
    from lmmrec.experiments.runner import one_line
    from lmmrec.training.run import evaluate_run_pools

    results = {}
    runs = [run for dirs in rows["run_dirs"] for run in dirs]
    for run in tqdm(runs, desc="item cold-start pools", unit="run", disable=None):
        try:
            results[run] = evaluate_run_pools(Path(run), ("test",), cached=True)["test"]
        except LmmrecError as error:
            if problems is not None:
                problems.append(f"Item cold-start pools of {run} left out: {one_line(error)}")
    out = []
    for _, row in rows.iterrows():
        values: dict[str, list[float]] = {}
        items: dict[str, int] = {}
        for run in row["run_dirs"]:
            for result in results.get(run, []):
                column = POOL_COLUMNS[(result.pool, result.scored_by)]
                values.setdefault(column, []).append(result.metrics[metric])
                items[f"items.{result.pool}"] = result.n_items
        record: dict[str, Any] = {key: row[key] for key in GROUP}
        record.update(
            {
                c: float(np.mean(values[c])) if c in values else math.nan
                for c in POOL_COLUMNS.values()
            }
        )
        record.update(items)
        out.append(record)
    table = pd.DataFrame(out)
    if "items.cold" not in table:
        return None
    return table


def pool_cells(report: Report, table: DatasetTable) -> tuple[list[str], list[list[_Cell]]]:
    """Headers and cells of a dataset's item cold-start table (all writers share them)."""
    assert table.pools is not None
    pools = table.pools
    headers = ["model", "encoder", "paradigm", *POOL_COLUMNS.values()]
    best = {c: set(pools.index[pools[c] == pools[c].max()]) for c in POOL_COLUMNS.values()}
    body = []
    for index, row in pools.iterrows():
        cells = [_Cell(str(row[key])) for key in ("model", "encoder", "paradigm")]
        for column in POOL_COLUMNS.values():
            value = row[column]
            cells.append(
                _Cell("-" if math.isnan(value) else f"{value:.4f}", best=index in best[column])
            )
        body.append(cells)
    return headers, body


def _pool_caption(report: Report, table: DatasetTable) -> str:
    assert table.pools is not None
    sizes = ", ".join(
        f"{int(table.pools[f'items.{pool}'].max())} {pool}"
        for pool in ("all", "warm", "cold")
        if f"items.{pool}" in table.pools
    )
    return (
        f"{table.dataset}: item cold start, test {report.select} of the same runs (mean over "
        f"seeds), each pool ranked on its own (items: {sizes}): warm items have training "
        "interactions, cold ones have none. Cold items placed as the service places a new "
        "item: 'content' by the model's own content part (models with one), 'map' by a ridge "
        "map from item features to the learned item vectors fitted on the warm items (models "
        "trained with features); 'all +...' ranks every item with the cold ones so placed. "
        "Best per column in bold."
    )


# ----------------------------------------------------------------------------- the report
@dataclass
class DatasetTable:
    """The comparison table of one dataset: selected rows, their comparisons with the baseline."""

    dataset: str
    rows: pd.DataFrame
    baseline: int | None  # row index of the baseline in ``rows``
    comparisons: pd.DataFrame  # row, metric, means, improvement, p-values raw and Holm-adjusted
    pools: pd.DataFrame | None = None  # item cold start (pool_table), when asked for


@dataclass
class Report:
    name: str
    description: str
    metrics: list[str]
    select: str
    alpha: float
    tables: list[DatasetTable]
    counts: dict[str, int]
    failed: list[tuple[str, str]]
    figures: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def build_report(
    experiment: Experiment,
    results: pd.DataFrame | None = None,
    *,
    alpha: float = 0.05,
    plots: bool = True,
    pools: bool = False,
) -> Report:
    """The report of ``experiment`` from its results table (read from disk when not given).

    With ``pools=True`` each dataset with held-out interactions on cold items (items without
    training interactions) also gets an item cold-start table (:func:`pool_table`).
    """
    from lmmrec.experiments.runner import read_results, state_counts

    spec = experiment.spec
    if results is None:
        results = read_results(experiment.output_dir)
    metrics = list(dict.fromkeys(spec.metrics))
    selected = select_points(results, spec.select, metrics)
    tables = []
    for dataset in spec.datasets:
        rows = selected[selected["dataset"] == dataset].reset_index(drop=True)
        if rows.empty:
            continue
        baseline = _baseline_row(experiment, rows)
        comparisons = _compare(rows, baseline, metrics, alpha)
        tables.append(DatasetTable(dataset, rows, baseline, comparisons))
    failed = [
        (str(r.run_id or r.model), str(r.error))
        for r in results[results["state"] == "failed"].itertuples()
    ]
    report = Report(
        name=experiment.name,
        description=spec.description,
        metrics=metrics,
        select=spec.select,
        alpha=alpha,
        tables=tables,
        counts=state_counts(results),
        failed=failed,
    )
    for table in tables if pools else []:
        table.pools = pool_table(table.rows, spec.select, report.notes)
        if table.pools is None:
            report.notes.append(
                f"{table.dataset}: no test interaction is with a cold item (one without training "
                "interactions), so it has no item cold-start table."
            )
    if any(t.comparisons["t.p"].isna().all() and len(t.comparisons) for t in tables):
        report.notes.append(
            f"Rows without per-user test metrics ({TEST_USERS} in their run directories) are "
            "not tested for significance."
        )
    if plots:
        try:
            report.figures = _figures(report, results)
        except ImportError:
            report.notes.append("Plots need matplotlib: pip install 'lmmrec[report]'.")
    return report


def _baseline_row(experiment: Experiment, rows: pd.DataFrame) -> int | None:
    """The baseline's row: the file's ``baseline``, else the first id-only model, else row 0."""
    wanted = experiment.spec.baseline
    if wanted is not None:
        match = rows["model"] == wanted.model
        if wanted.encoder is not None:
            match &= rows["encoder"] == wanted.encoder
        if wanted.paradigm is not None:
            match &= rows["paradigm"] == wanted.paradigm
        hits = np.flatnonzero(match.to_numpy())
        return int(hits[0]) if hits.size else None
    id_only = np.flatnonzero((rows["encoder"] == NONE).to_numpy())
    return int(id_only[0]) if id_only.size else 0


def _compare(
    rows: pd.DataFrame, baseline: int | None, metrics: list[str], alpha: float
) -> pd.DataFrame:
    columns = ["row", "metric", "mean", "baseline", "improvement", "n", "t.p", "w.p"]
    if baseline is None:
        return pd.DataFrame(columns=[*columns, "t.holm", "w.holm"])
    records = []
    base_dirs = rows.loc[baseline, "run_dirs"]
    for index in range(len(rows)):
        if index == baseline:
            continue
        for metric in metrics:
            mean = rows.loc[index, f"{metric}.mean"]
            base = rows.loc[baseline, f"{metric}.mean"]
            record = {
                "row": index,
                "metric": metric,
                "mean": mean,
                "baseline": base,
                "improvement": (mean - base) / base if base else math.nan,
                "n": 0,
                "t.p": math.nan,
                "w.p": math.nan,
            }
            ours = per_user_metric(rows.loc[index, "run_dirs"], metric)
            theirs = per_user_metric(base_dirs, metric)
            if ours is not None and theirs is not None:
                _, a, b = align_users(*ours, *theirs)
                record["n"] = int(a.size)
                record["t.p"] = paired_t_test(a, b).p_value
                record["w.p"] = wilcoxon_test(a, b).p_value
            records.append(record)
    frame = pd.DataFrame(records, columns=columns)
    frame["t.holm"] = holm(frame["t.p"].to_numpy(dtype=float)) if len(frame) else []
    frame["w.holm"] = holm(frame["w.p"].to_numpy(dtype=float)) if len(frame) else []
    return frame


def _marks(table: DatasetTable, index: int, metric: str, alpha: float) -> str:
    c = table.comparisons
    hit = c[(c["row"] == index) & (c["metric"] == metric)]
    if hit.empty:
        return ""
    mark = T_MARK if hit["t.holm"].iloc[0] < alpha else ""
    return mark + (W_MARK if hit["w.holm"].iloc[0] < alpha else "")


def _cell_text(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _best(rows: pd.DataFrame, metric: str) -> set[int]:
    values = rows[f"{metric}.mean"].to_numpy(dtype=float)
    if np.isnan(values).all():
        return set()
    return set(np.flatnonzero(values == np.nanmax(values)).tolist())


def point_text(point: str) -> str:
    """A grid point's JSON as ``k=v, ...`` (``defaults`` when empty)."""
    values = json.loads(point) if point else {}
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "defaults"


def _improvement(table: DatasetTable, index: int, metric: str) -> str:
    if table.baseline is None:
        return ""
    if index == table.baseline:
        return "baseline"
    base = table.rows.loc[table.baseline, f"{metric}.mean"]
    mean = table.rows.loc[index, f"{metric}.mean"]
    return f"{(mean - base) / base * 100:+.1f}%" if base else "n/a"


@dataclass
class _Cell:
    text: str
    best: bool = False
    marks: str = ""


def table_cells(report: Report, table: DatasetTable) -> tuple[list[str], list[list[_Cell]]]:
    """Headers and cells of a dataset's table (shared by the Markdown, HTML and LaTeX writers)."""
    headers = ["model", "encoder", "paradigm", *(short_metric(m) for m in report.metrics)]
    headers += [f"Δ {short_metric(report.select)}", "seeds", "selected (of points)"]
    best = {m: _best(table.rows, m) for m in report.metrics}
    body = []
    for index, row in table.rows.iterrows():
        cells = [_Cell(str(row["model"])), _Cell(str(row["encoder"])), _Cell(str(row["paradigm"]))]
        for metric in report.metrics:
            cells.append(
                _Cell(
                    _cell_text(row[f"{metric}.mean"], row[f"{metric}.std"]),
                    best=index in best[metric],
                    marks=_marks(table, int(index), metric, report.alpha),
                )
            )
        cells.append(_Cell(_improvement(table, int(index), report.select)))
        cells.append(_Cell(str(row["seeds"])))
        cells.append(_Cell(f"{point_text(row['point'])} ({row['points']})"))
        body.append(cells)
    return headers, body


def _caption(report: Report, table: DatasetTable) -> str:
    base = ""
    if table.baseline is not None:
        b = table.rows.loc[table.baseline]
        base = " / ".join(str(b[c]) for c in ("model", "encoder", "paradigm") if b[c] != NONE)
    return (
        f"{table.dataset}: test metrics at the grid point and epoch selected on validation "
        f"{report.select}; mean ± std over seeds; best per column in bold; Δ relative to the "
        f"baseline {base}; {T_MARK} paired t-test, {W_MARK} Wilcoxon signed-rank against the "
        f"baseline across test users, Holm-corrected, p < {report.alpha}."
    )


# ----------------------------------------------------------------------------- writers
def to_markdown(report: Report, figure_dir: str | None = "figures") -> str:
    """The report as Markdown (figures linked from ``figure_dir`` when given)."""
    out = [f"# Experiment {report.name}", ""]
    if report.description:
        out += [report.description.strip(), ""]
    out += [_counts_line(report), ""]
    for table in report.tables:
        out += [f"## {table.dataset}", "", f"*{_caption(report, table)}*", ""]
        out += [*_markdown_table(*table_cells(report, table)), ""]
        out += [*_comparison_markdown(report, table), ""]
        if table.pools is not None:
            out += [f"*{_pool_caption(report, table)}*", ""]
            out += [*_markdown_table(*pool_cells(report, table)), ""]
        if figure_dir:
            for name in _figure_names(report, table.dataset):
                out += [f"![{name}]({figure_dir}/{name}.png)", ""]
    if figure_dir and "time" in report.figures:
        out += ["## Training time per run", "", f"![time]({figure_dir}/time.png)", ""]
    out += _failures_markdown(report)
    out += [f"*{note}*" for note in report.notes]
    return "\n".join(out).rstrip() + "\n"


def _markdown_table(headers: list[str], body: list[list[_Cell]]) -> list[str]:
    """A Markdown table: three label columns, then right-aligned numbers."""
    out = ["| " + " | ".join(headers) + " |"]
    out.append("|" + "|".join(["---"] * 3 + ["---:"] * (len(headers) - 3)) + "|")
    for cells in body:
        texts = [f"**{c.text}**{c.marks}" if c.best else f"{c.text}{c.marks}" for c in cells]
        out.append("| " + " | ".join(texts) + " |")
    return out


def _counts_line(report: Report) -> str:
    return "Runs: " + ", ".join(f"{v} {k}" for k, v in report.counts.items() if v) + "."


def _comparison_markdown(report: Report, table: DatasetTable) -> list[str]:
    c = table.comparisons
    if c.empty:
        return []
    out = [
        "| row | metric | mean | baseline | Δ | users | t-test p (Holm) | Wilcoxon p (Holm) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for _, r in c.iterrows():
        label = _row_label(table.rows.loc[r["row"]])
        out.append(
            f"| {label} | {short_metric(r['metric'])} | {r['mean']:.4f} | {r['baseline']:.4f} | "
            f"{r['improvement'] * 100:+.1f}% | {r['n'] or 'n/a'} | {_p(r['t.p'], r['t.holm'])} | "
            f"{_p(r['w.p'], r['w.holm'])} |"
        )
    return out


def _row_label(row: pd.Series) -> str:
    return " / ".join(str(row[k]) for k in ("model", "encoder", "paradigm") if row[k] != NONE)


def _p(raw: float, adjusted: float) -> str:
    if math.isnan(raw):
        return "not tested"
    return f"{raw:.2g} ({adjusted:.2g})"


def _failures_markdown(report: Report) -> list[str]:
    if not report.failed:
        return []
    out = ["## Failed runs", ""]
    out += [f"- `{run}`: {error}" for run, error in report.failed]
    return [*out, ""]


def _figure_names(report: Report, dataset: str) -> list[str]:
    return [n for n in (f"bars-{dataset}", f"curves-{dataset}") if n in report.figures]


def to_html(report: Report) -> str:
    """A self-contained HTML page: tables, comparisons and every plot embedded as base64 PNG."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Experiment {e(report.name)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;"
        "padding:0 1em}table{border-collapse:collapse;margin:1em 0}th,td{padding:.3em .6em;"
        "border-bottom:1px solid #ddd}td.num{text-align:right;font-variant-numeric:tabular-nums}"
        "caption{caption-side:bottom;font-size:.85em;color:#555;text-align:left}"
        "img{max-width:100%}</style>",
        "</head><body>",
        f"<h1>Experiment {e(report.name)}</h1>",
    ]
    if report.description:
        parts.append(f"<p>{e(report.description.strip())}</p>")
    parts.append(f"<p>{e(_counts_line(report))}</p>")
    for table in report.tables:
        parts.append(f"<h2>{e(table.dataset)}</h2>")
        parts += _html_table("results", _caption(report, table), *table_cells(report, table))
        comparison = _comparison_markdown(report, table)
        if comparison:
            parts.append('<table class="significance">')
            for i, line in enumerate(comparison):
                if i == 1:
                    continue
                tag = "th" if i == 0 else "td"
                cells = [x.strip() for x in line.strip("|").split("|")]
                parts.append("<tr>" + "".join(f"<{tag}>{e(x)}</{tag}>" for x in cells) + "</tr>")
            parts.append("</table>")
        if table.pools is not None:
            caption = _pool_caption(report, table)
            parts += _html_table("pools", caption, *pool_cells(report, table))
        for name in _figure_names(report, table.dataset):
            parts.append(_img(name, report.figures[name]))
    if "time" in report.figures:
        parts += ["<h2>Training time per run</h2>", _img("time", report.figures["time"])]
    if report.failed:
        parts.append("<h2>Failed runs</h2><ul>")
        parts += [f"<li><code>{e(r)}</code>: {e(err)}</li>" for r, err in report.failed]
        parts.append("</ul>")
    parts += [f"<p><em>{e(note)}</em></p>" for note in report.notes]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_table(
    css_class: str, caption: str, headers: list[str], body: list[list[_Cell]]
) -> list[str]:
    """An HTML table: three label columns, then right-aligned numbers."""
    e = html.escape
    parts = [f'<table class="{css_class}">', f"<caption>{e(caption)}</caption>"]
    parts.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in headers) + "</tr>")
    for cells in body:
        tds = []
        for i, c in enumerate(cells):
            text = e(c.text) + (f"<sup>{e(c.marks)}</sup>" if c.marks else "")
            text = f"<strong>{text}</strong>" if c.best else text
            tds.append(f'<td class="num">{text}</td>' if i >= 3 else f"<td>{text}</td>")
        parts.append("<tr>" + "".join(tds) + "</tr>")
    parts.append("</table>")
    return parts


def _img(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"></figure>'


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {"~": r"\textasciitilde{}", "^": r"\^{}"}


def _tex(text: str) -> str:
    text = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
    text = text.replace("<", "$<$").replace(">", "$>$")
    return text.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("—", "---")


def to_latex(report: Report) -> str:
    """One booktabs ``table`` per dataset, and per item cold-start table (needs
    ``\\usepackage{booktabs}``)."""
    out = [f"% lmmrec experiment {report.name}: generated by `lmmrec experiment report`"]
    for table in report.tables:
        headers, body = table_cells(report, table)
        keep = 3 + len(report.metrics) + 1  # the label columns, the metrics and the improvement
        headers, body = headers[:keep], [row[:keep] for row in body]
        out += _latex_table(_caption(report, table), headers, body)
        if table.pools is not None:
            out += _latex_table(_pool_caption(report, table), *pool_cells(report, table))
    return "\n".join(out)


def _latex_table(caption: str, headers: list[str], body: list[list[_Cell]]) -> list[str]:
    marks = {T_MARK: r"\dagger", W_MARK: r"\ddagger"}
    caption = _tex(caption).replace(T_MARK, "$^\\dagger$").replace(W_MARK, "$^\\ddagger$")
    out = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{caption}}}",
        rf"\begin{{tabular}}{{lll{'r' * (len(headers) - 3)}}}",
        r"\toprule",
        " & ".join(_tex(h) for h in headers) + r" \\",
        r"\midrule",
    ]
    for cells in body:
        texts = []
        for c in cells:
            text = _tex(c.text)
            text = rf"\textbf{{{text}}}" if c.best else text
            if c.marks:
                text += "$^{" + "".join(marks[m] for m in c.marks) + "}$"
            texts.append(text)
        out.append(" & ".join(texts) + r" \\")
    return [*out, r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]


def write_report(report: Report, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``report.tex`` and ``figures/*.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, png in report.figures.items():
        path = out / "figures" / f"{name}.png"
        path.parent.mkdir(exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_bytes(png)
    for kind, text in (
        ("md", to_markdown(report)),
        ("html", to_html(report)),
        ("tex", to_latex(report)),
    ):
        paths[kind] = out / f"report.{kind}"
        with atomic_path(paths[kind]) as tmp:
            tmp.write_text(text)
    return paths


# ----------------------------------------------------------------------------- plots
def _figures(report: Report, results: pd.DataFrame) -> dict[str, bytes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def png(fig: Figure) -> bytes:
        FigureCanvasAgg(fig)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        return buffer.getvalue()

    figures: dict[str, bytes] = {}
    metric = report.select
    for table in report.tables:
        rows = table.rows
        # grouped bars: one group per model, one bar per (encoder, paradigm)
        combos = list(dict.fromkeys(zip(rows["encoder"], rows["paradigm"], strict=True)))
        models = list(dict.fromkeys(rows["model"]))
        fig = Figure(figsize=(max(5.0, 1.2 * len(models) + 2), 3.6))
        ax = fig.add_subplot()
        colours = {combo: f"C{j % 10}" for j, combo in enumerate(combos)}
        labelled: set[tuple[str, str]] = set()
        for i, model in enumerate(models):
            bars = rows[rows["model"] == model]  # centred within the model's own group
            width = 0.8 / len(bars)
            for j, (_, row) in enumerate(bars.iterrows()):
                combo = (row["encoder"], row["paradigm"])
                label = "id only" if combo == (NONE, NONE) else f"{combo[0]} / {combo[1]}"
                ax.bar(
                    i + (j - (len(bars) - 1) / 2) * width,
                    row[f"{metric}.mean"],
                    width,
                    yerr=0 if math.isnan(row[f"{metric}.std"]) else row[f"{metric}.std"],
                    color=colours[combo],
                    label=None if combo in labelled else label,
                    capsize=2,
                )
                labelled.add(combo)
        ax.set_xticks(range(len(models)), models)
        ax.set_ylabel(f"test {short_metric(metric)}")
        ax.set_title(f"{table.dataset}: test {metric} at the selected point")
        ax.legend(fontsize="small", frameon=False)
        figures[f"bars-{table.dataset}"] = png(fig)
        # validation curves of the selected point (mean over seeds per epoch)
        fig = Figure(figsize=(6.4, 3.6))
        ax = fig.add_subplot()
        for _, row in rows.iterrows():
            curve = _valid_curve(row["run_dirs"], metric)
            if curve is not None:
                ax.plot(curve.index, curve.to_numpy(), label=_row_label(row), linewidth=1.2)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"valid {short_metric(metric)}")
        ax.set_title(f"{table.dataset}: validation curves of the selected runs")
        ax.legend(fontsize="small", frameon=False)
        figures[f"curves-{table.dataset}"] = png(fig)
    done = results[results["state"] == "done"].copy()
    if not done.empty and done["seconds"].notna().any():
        done[["encoder", "paradigm"]] = done[["encoder", "paradigm"]].fillna(NONE)
        labels = [
            " / ".join(str(v) for v in (r.dataset, r.model, r.encoder, r.paradigm) if v != NONE)
            for r in done.itertuples()
        ]
        order = list(dict.fromkeys(labels))
        fig = Figure(figsize=(6.4, max(2.5, 0.35 * len(order) + 1)))
        ax = fig.add_subplot()
        ys = np.array([order.index(label) for label in labels], dtype=float)
        jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(ys))
        ax.scatter(done["seconds"], ys + jitter, s=12, alpha=0.7)
        ax.set_yticks(range(len(order)), order)
        ax.set_xlabel("training seconds per run (epochs and evaluations)")
        ax.set_title("training time per run")
        figures["time"] = png(fig)
    return figures


def _valid_curve(run_dirs: list[str], metric: str) -> pd.Series | None:
    curves = []
    for run_dir in run_dirs:
        try:
            history = read_json(Path(run_dir) / "metrics.json").get("history", [])
        except (OSError, ValueError):
            continue
        points = {r["epoch"]: r["valid"][metric] for r in history if metric in r.get("valid", {})}
        if points:
            curves.append(pd.Series(points))
    if not curves:
        return None
    return pd.concat(curves, axis=1).mean(axis=1).sort_index()

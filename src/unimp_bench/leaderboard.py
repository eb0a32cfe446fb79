"""A folder of Result JSONs -> one long table -> wide CSV / Markdown / PNG (pivoted only at export).

Reported numbers from the UniMP paper (package data copied from shared/reference) can be added as
rows whose source says "paper (reported)": they were not measured by this tool, on data that is not
byte-identical to ours, and are there for orientation only.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import polars as pl

from unimp_bench.errors import UnimpError
from unimp_bench.fileio import write_bytes_atomic
from unimp_bench.metrics import IMAGE_METRICS, RATING_METRICS, SET_METRICS, TEXT_METRICS, parse_metric
from unimp_bench.resources import resource_dir
from unimp_bench.results import find_results, read_result

MEASURED = "measured"
SEED_PATTERN = r"-seed\d+"  # methods whose names differ only here are seeds of one method
REPORTED = "paper (reported)"
PAPER_DATASET = "UniMP paper: Amazon (not byte-identical to ours)"
# The paper's metric names where ours are more specific. Its BLEU is the unigram precision its code
# reports (`precisions[0]` of HF evaluate's BLEU: our BLEU-1, see metrics.py), not BLEU-4; its
# BERTScore is the F1 (an assumption); its "ROUGE" does not say which variant, so it stays as is.
PAPER_METRIC_ALIASES = {"BLEU": "BLEU-1", "BERTScore": "BERTScore-F1"}
ROW_KEYS = ["source", "dataset", "method", "task", "task_version", "split", "n_examples"]
LONG_SCHEMA = {
    "source": pl.String,
    "dataset": pl.String,
    "dataset_hash": pl.String,
    "method": pl.String,
    "task": pl.String,
    "task_version": pl.Int32,
    "split": pl.String,
    "n_examples": pl.Int64,
    "metric": pl.String,
    "value": pl.Float64,
    "low": pl.Float64,  # the bootstrap interval over examples (uncertainty.py), when the result has one
    "high": pl.Float64,
    "se": pl.Float64,  # standard error over seeds, on a row that aggregates a method's seeds
    "seeds": pl.Int32,
    "origin": pl.String,  # the result file, or the paper's table
    "note": pl.String,  # why a method has no scores here ("not applicable: ..."), or a caveat of a paper row
}


def measured_rows(folder: Path) -> pl.DataFrame:
    rows = []
    seen: dict[tuple, Path] = {}
    for path in find_results(folder):
        result = read_result(path)
        key = (result.dataset["content_hash"], result.method, result.task, result.task_version, result.split)
        if key in seen:
            raise UnimpError(
                f"{seen[key]} and {path} both hold {result.method} on {result.task}/{result.split} "
                "of the same dataset; keep one"
            )
        seen[key] = path
        domains = result.dataset.get("domains") or []
        label = (
            f"{result.dataset.get('name', '?')}: {'+'.join(domains)}"
            if domains
            else result.dataset.get("name", "?")
        )
        dataset = f"{label} ({result.dataset['content_hash'][:8]})"
        reason = result.provenance.get("not_applicable")
        missing = (result.provenance.get("metric_settings") or {}).get("missing_metrics") or {}
        note = f"not applicable: {reason}" if reason else None
        if missing:  # scored, but some metrics could not be computed here (METEOR without WordNet)
            note = NOT_COMPUTED + "; ".join(f"{name} ({why})" for name, why in missing.items())
        intervals = result.provenance.get("uncertainty", {}).get("intervals", {})
        for metric, value in result.scores.items():
            low, high = intervals.get(metric, (None, None))
            rows.append(
                {
                    "source": MEASURED,
                    "dataset": dataset,
                    "dataset_hash": result.dataset["content_hash"],
                    "method": result.method,
                    "task": result.task,
                    "task_version": result.task_version,
                    "split": result.split,
                    "n_examples": result.n_examples,
                    "metric": metric,
                    "value": None if reason or math.isnan(value) else value,  # null, never NaN
                    "low": low,
                    "high": high,
                    "se": None,
                    "seeds": None,
                    "origin": str(path.relative_to(folder)),
                    "note": note,
                }
            )
    return with_seed_means(pl.DataFrame(rows, schema=LONG_SCHEMA))


def with_seed_means(long: pl.DataFrame) -> pl.DataFrame:
    """The table plus one row per method whose results differ only in `-seedN` (two or more seeds of
    it on the same dataset, task and split): the mean over seeds and its standard error."""
    seeded = long.filter(pl.col("method").str.contains(SEED_PATTERN) & pl.col("value").is_not_null())
    if seeded.is_empty():
        return long
    keys = ["source", "dataset", "dataset_hash", "task", "task_version", "split", "metric"]
    means = (
        seeded.with_columns(pl.col("method").str.replace_all(SEED_PATTERN, "").alias("base"))
        .group_by(*keys, "base")
        .agg(
            pl.col("value").mean().alias("value"),
            (pl.col("value").std() / pl.len().sqrt()).alias("se"),
            pl.len().cast(pl.Int32).alias("seeds"),
            pl.col("n_examples").first(),
            pl.col("method").sort().str.join(", ").alias("origin"),
        )
        .filter(pl.col("seeds") >= 2)
        .with_columns(
            (pl.col("base") + " (mean of " + pl.col("seeds").cast(pl.String) + " seeds)").alias("method"),
            pl.lit(None, pl.Float64).alias("low"),
            pl.lit(None, pl.Float64).alias("high"),
            pl.lit(None, pl.String).alias("note"),
        )
    )
    return pl.concat([long, means.select(LONG_SCHEMA.keys()).cast(LONG_SCHEMA)])


# a result's note when it was scored but some metrics could not be computed; their cells read "missing"
NOT_COMPUTED = "not computed: "


# what a reader must know before putting a paper row next to ours
PAPER_NOTES = {
    "table4b": "the paper does not say what its new-domain methods trained on; its ID-only baselines "
    "(S3-Rec) score above chance, which needs held-out-domain training data: compare with our "
    "new_domain_finetune, not the zero-shot new_domain",
}


def paper_rows() -> pl.DataFrame:
    with open(resource_dir("reference") / "unimp_paper_results.csv", newline="", encoding="utf-8") as handle:
        rows = [
            {
                "source": REPORTED,
                "dataset": PAPER_DATASET,
                "dataset_hash": None,
                "method": row["method"],
                "task": row["task"],
                "task_version": None,
                "split": row["split"],
                "n_examples": None,
                "metric": PAPER_METRIC_ALIASES.get(row["metric"], row["metric"]),
                "value": float(row["value"]),
                "low": None,
                "high": None,
                "se": None,
                "seeds": None,
                "origin": row["table"],
                "note": PAPER_NOTES.get(row["table"]),
            }
            for row in csv.DictReader(handle)
        ]
    return pl.DataFrame(rows, schema=LONG_SCHEMA)


def long_table(folder: Path, with_paper: bool = False) -> pl.DataFrame:
    table = measured_rows(folder)
    if table.is_empty() and not with_paper:
        raise UnimpError(f"no result JSON files found under {folder}")
    if with_paper:
        table = pl.concat([table, paper_rows()])
    return table


def metric_order(name: str) -> tuple:
    fixed = [*RATING_METRICS, *SET_METRICS, *TEXT_METRICS, *IMAGE_METRICS]
    try:
        parsed = parse_metric(name)
    except UnimpError:
        return (3, 0, 0, name)
    if parsed.family == "ranking":
        return (0, parsed.k, ("HR", "NDCG", "MRR").index(name.split("@")[0]), name)
    return (1, fixed.index(name), 0, name)


def wide_table(long: pl.DataFrame) -> pl.DataFrame:
    """One row per source x dataset x method x task x split, one column per metric."""
    metrics = sorted(long["metric"].unique().to_list(), key=metric_order)
    keys = [*ROW_KEYS, "origin", "note"]
    wide = long.select(*keys, "metric", "value").pivot(
        on="metric", index=keys, values="value", aggregate_function=None
    )
    # each metric's interval bounds and seed standard error, as `<metric> low|high|se` columns, where
    # any row has them
    spreads = []
    for field in ("low", "high", "se"):
        present = long.filter(pl.col(field).is_not_null())
        if present.is_empty():
            continue
        part = present.select(*keys, pl.col("metric") + f" {field}", field).pivot(
            on="metric", index=keys, values=field, aggregate_function=None
        )
        spreads += [c for c in part.columns if c not in keys]
        wide = wide.join(part, on=keys, how="left", nulls_equal=True)
    source_order = pl.col("source").replace_strict(
        {MEASURED: 0, REPORTED: 1}, default=2, return_dtype=pl.Int8
    )
    columns = [c for m in metrics for c in (m, f"{m} low", f"{m} high", f"{m} se") if c == m or c in spreads]
    return wide.sort(source_order, "dataset", "task", "split", "method").select(*keys, *columns)


def _format(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def markdown(wide: pl.DataFrame) -> str:
    """One cell per metric: the value with its 95% interval `[low, high]` over examples, or
    `+- se` over seeds, where the result has them."""
    spread = {c for c in wide.columns if " " in c and c.rsplit(" ", 1)[-1] in ("low", "high", "se")}
    shown = [c for c in wide.columns if c not in spread]
    header = "| " + " | ".join(shown) + " |"
    rule = "|" + "|".join("---" for _ in shown) + "|"
    lines = [header, rule]
    metric_columns = set(shown) - {*ROW_KEYS, "origin", "note"}
    for row in wide.iter_rows(named=True):
        note = row.get("note") or ""
        blank = "missing" if note.startswith(NOT_COMPUTED) else "n/a" if note else ""
        cells = []
        for name in shown:
            cell = _format(row[name])
            if name in metric_columns:
                if cell == "":
                    cell = blank
                elif row.get(f"{name} low") is not None:
                    cell += f" [{_format(row[f'{name} low'])}, {_format(row[f'{name} high'])}]"
                elif row.get(f"{name} se") is not None:
                    cell += f" +- {_format(row[f'{name} se'])}"
            cells.append(cell)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def plot(long: pl.DataFrame, path: Path) -> None:
    """One panel per measured (dataset, task, split): bars of each metric, one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = long.filter(pl.col("source") == MEASURED)
    if measured.is_empty():
        raise UnimpError("there are no measured results to plot")
    panels = measured.select("dataset", "task", "split").unique().sort("dataset", "task", "split").rows()
    figure, axes = plt.subplots(len(panels), 1, figsize=(10, 3.2 * len(panels)), squeeze=False)
    for axis, (dataset, task, split) in zip(axes[:, 0], panels):
        panel = measured.filter(
            (pl.col("dataset") == dataset) & (pl.col("task") == task) & (pl.col("split") == split)
        )
        metrics = sorted(panel["metric"].unique().to_list(), key=metric_order)
        scored = panel.filter(pl.col("value").is_not_null() & pl.col("value").is_not_nan())
        methods = sorted(scored["method"].unique().to_list())
        # a not-applicable method has no bar; the panel's title names it
        missing = sorted(set(panel["method"].to_list()) - set(methods))
        width = 0.8 / max(1, len(methods))
        for index, method in enumerate(methods):
            values = dict(scored.filter(pl.col("method") == method).select("metric", "value").rows())
            axis.bar(
                [m + index * width for m in range(len(metrics))],
                [values.get(metric, float("nan")) for metric in metrics],
                width=width,
                label=method,
            )
        axis.set_xticks([m + 0.4 - width / 2 for m in range(len(metrics))], metrics, rotation=30, fontsize=8)
        title = f"{task} / {split} - {dataset}" + (f" (n/a: {', '.join(missing)})" if missing else "")
        axis.set_title(title, fontsize=9)
        if methods:
            axis.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    write_bytes_atomic(path, buffer.getvalue())


def csv_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_csv(buffer, float_precision=6)
    return buffer.getvalue()


def compare_path(csv_path: Path) -> Path:
    return csv_path.with_name(f"{csv_path.stem}.compare.csv")


def export_leaderboard(
    folder: Path,
    csv_path: Path,
    markdown_path: Path | None = None,
    plot_path: Path | None = None,
    long_path: Path | None = None,
    with_paper: bool = False,
    compare_to: str | None = None,
) -> pl.DataFrame:
    """Write the wide CSV (and the other views asked for). With `compare_to`, also every method paired
    against that one (comparisons.py): `<csv stem>.compare.csv` and a section of the Markdown."""
    long = long_table(folder, with_paper)
    wide = wide_table(long)
    section = ""
    if compare_to:
        from unimp_bench.comparisons import compare, compare_markdown

        paired = compare(folder, compare_to)
        write_bytes_atomic(compare_path(csv_path), csv_bytes(paired))
        section = compare_markdown(paired)
    write_bytes_atomic(csv_path, csv_bytes(wide))
    if long_path:
        write_bytes_atomic(long_path, csv_bytes(long))
    if markdown_path:
        write_bytes_atomic(markdown_path, (markdown(wide) + section).encode())
    if plot_path:
        plot(long, plot_path)
    return wide

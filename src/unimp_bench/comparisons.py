"""`leaderboard --compare METHOD`: every other method against METHOD on the same examples.

For each dataset, task and split where METHOD has a scored result, every other scored result there
is paired with it on the examples both answered (by example id), from the per-example statistics
scoring stored next to each result (uncertainty.py). Per metric: the difference (other minus
METHOD), its paired-bootstrap 95% interval and the two-sided p-value of a permutation test that
swaps the two methods' statistics per example. A result without statistics (written before they
existed, or a not-applicable one) is listed with the reason instead of being dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from unimp_bench.errors import UnimpError
from unimp_bench.fileio import file_sha256
from unimp_bench.results import Result, find_results, read_result
from unimp_bench.uncertainty import ExampleStatistics, paired_test, read_statistics

COMPARE_SCHEMA = {
    "dataset_hash": pl.String,
    "task": pl.String,
    "split": pl.String,
    "method": pl.String,
    "reference": pl.String,
    "metric": pl.String,
    "paired_examples": pl.Int64,
    "difference": pl.Float64,
    "low": pl.Float64,
    "high": pl.Float64,
    "p_value": pl.Float64,
    "note": pl.String,
}


def _statistics(path: Path, result: Result) -> tuple[list[str], ExampleStatistics] | str:
    """The result's per-example statistics, checked against the hash it recorded, or why not."""
    if result.provenance.get("not_applicable"):
        return "not applicable"
    stored = result.provenance.get("uncertainty", {}).get("statistics")
    if not stored:
        return "no per-example statistics (scored before they were stored; score it again)"
    file = path.parent / stored["file"]
    if not file.is_file() or file_sha256(file) != stored["sha256"]:
        return f"{stored['file']} is missing or changed since it was scored"
    return read_statistics(file, tuple(result.scores))


def compare(folder: Path, reference: str) -> pl.DataFrame:
    """The long comparison table of every method against `reference` (see the module doc)."""
    results = [(path, read_result(path)) for path in find_results(folder)]
    anchors = [(p, r) for p, r in results if r.method == reference]
    if not anchors:
        names = sorted({r.method for _, r in results})
        raise UnimpError(f"no results of {reference!r} under {folder}; methods there: {', '.join(names)}")
    rows = []
    for anchor_path, anchor in anchors:
        key = (anchor.dataset["content_hash"], anchor.task, anchor.task_version, anchor.split)
        base = _statistics(anchor_path, anchor)
        for path, other in results:
            if (
                other is anchor
                or (other.dataset["content_hash"], other.task, other.task_version, other.split) != key
            ):
                continue
            common = {
                "dataset_hash": key[0], "task": anchor.task, "split": anchor.split,
                "method": other.method, "reference": reference,
            }  # fmt: skip
            mine = _statistics(path, other)
            problem = base if isinstance(base, str) else mine if isinstance(mine, str) else None
            if problem:
                rows.append({**common, "note": problem})
                continue
            rows += _paired_rows(common, base, mine)
    return pl.DataFrame(rows, schema=COMPARE_SCHEMA)


def _paired_rows(common: dict, base: tuple, mine: tuple) -> list[dict]:
    (base_ids, base_stats), (my_ids, my_stats) = base, mine
    position = {example: row for row, example in enumerate(base_ids)}
    shared = [(position[e], row) for row, e in enumerate(my_ids) if e in position]
    if not shared:
        return [{**common, "note": "no examples in common"}]
    left = my_stats.select(np.array([m for _, m in shared]))
    right = base_stats.select(np.array([b for b, _ in shared]))
    rows = []
    for metric in sorted(set(left.formulas) & set(right.formulas)):
        test = paired_test(left, right, metric)
        rows.append({**common, "metric": metric, "paired_examples": len(shared), **test})
    return rows


def compare_markdown(table: pl.DataFrame) -> str:
    """The comparison as a Markdown section (one row per method, task, split and metric)."""
    if table.is_empty():
        return ""
    reference = table["reference"][0]
    lines = [
        f"\n## Paired tests against {reference}\n",
        "Difference = method minus reference on the examples both answered; 95% paired-bootstrap "
        "interval; two-sided permutation p-value.\n",
        "| task | split | method | metric | examples | difference | 95% interval | p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table.sort("task", "split", "method", "metric").iter_rows(named=True):
        if row["note"]:
            lines.append(f"| {row['task']} | {row['split']} | {row['method']} | | | {row['note']} | | |")
            continue
        interval = f"[{row['low']:+.4f}, {row['high']:+.4f}]"
        lines.append(
            f"| {row['task']} | {row['split']} | {row['method']} | {row['metric']} | "
            f"{row['paired_examples']} | {row['difference']:+.4f} | {interval} | {row['p_value']:.4f} |"
        )
    return "\n".join(lines) + "\n"

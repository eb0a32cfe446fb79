"""Result records: one builder for a scored result and for a not-applicable one."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from unimp_bench import __version__
from unimp_bench.examples import ExampleSet
from unimp_bench.fileio import file_sha256
from unimp_bench.results import Result, write_result
from unimp_bench.tasks import Task
from unimp_bench.uncertainty import ExampleStatistics

STATISTICS_FOLDER = "statistics"  # per-example statistics of each result, under its results folder
ExampleRecord = tuple[list[str], ExampleStatistics]  # example ids and their statistics, in one order


def examples_provenance(example_set: ExampleSet, task: Task, split: str) -> dict:
    entry = example_set.entry(task, split)
    return {
        "file": entry["file"],
        "sha256": entry["sha256"],
        "seed": example_set.manifest["settings"]["seed"],
        "instruction": example_set.manifest["settings"]["instruction"],
    }


def build_result(
    method: str,
    task: Task,
    split: str,
    example_set: ExampleSet,
    n_examples: int,
    config: dict | None,
    *,
    scores: dict[str, float] | None = None,
    metric_settings: dict | None = None,
    predictions_file: Path | None = None,
    checkpoint: str | None = None,
    not_applicable: str | None = None,
) -> Result:
    """The Result of `method` on one task and split: its scores with the predictions file they came
    from, or, with `not_applicable`, the reason the method cannot serve that split; every metric of
    the task is then null, so the leaderboard shows "n/a" instead of silently missing a row."""
    provenance: dict = {
        "package_version": __version__,
        "seed": example_set.manifest["settings"]["seed"],
        "examples": examples_provenance(example_set, task, split),
    }
    if not_applicable is not None:
        scores = {metric: float("nan") for metric in task.metrics}
        provenance |= {"not_applicable": not_applicable, "config": config}
    else:
        provenance |= {
            "predictions": {"file": predictions_file.name, "sha256": file_sha256(predictions_file)},
            "metric_settings": metric_settings,
            "config": config or {},
            "checkpoint": checkpoint,
        }
    return Result(
        method=method,
        task=task.name,
        task_version=task.version,
        split=split,
        dataset={k: v for k, v in example_set.manifest["dataset"].items() if k != "path"},
        scores=scores,
        n_examples=n_examples,
        provenance=provenance,
    )


def record_scores(
    method: str,
    task: Task,
    split: str,
    example_set: ExampleSet,
    n_examples: int,
    config: dict,
    scores: dict[str, float],
    metric_settings: dict,
    predictions_file: Path,
    out: Path,
    checkpoint: str | None = None,
    statistics: ExampleRecord | None = None,
) -> tuple[Result, Path]:
    """The scored Result, written under `out`; returns it and its path. With the per-example
    statistics, they are written to `out/statistics/` and the result gets a bootstrap interval per
    metric (uncertainty.py)."""
    result = build_result(
        method,
        task,
        split,
        example_set,
        n_examples,
        config,
        scores=scores,
        metric_settings=metric_settings,
        predictions_file=predictions_file,
        checkpoint=checkpoint,
    )
    if statistics is not None:
        result = with_uncertainty(result, out, *statistics)
    return result, write_result(result, out)


def with_uncertainty(
    result: Result, out: Path, example_ids: list[str], statistics: ExampleStatistics
) -> Result:
    """The result with its per-example statistics saved and a seeded bootstrap interval per metric."""
    from unimp_bench.fileio import write_parquet_atomic
    from unimp_bench.uncertainty import LEVEL, RESAMPLES, SEED, bootstrap_intervals

    name = result.file_name().removesuffix(".json") + ".parquet"
    path = out / STATISTICS_FOLDER / name
    write_parquet_atomic(statistics.frame(example_ids), path)
    intervals = {
        metric: interval
        for metric, interval in bootstrap_intervals(statistics).items()
        if not math.isnan(result.scores.get(metric, math.nan))
    }
    uncertainty = {
        "method": "percentile bootstrap over examples",
        "resamples": RESAMPLES,
        "seed": SEED,
        "level": LEVEL,
        "intervals": intervals,
        "statistics": {"file": f"{STATISTICS_FOLDER}/{name}", "sha256": file_sha256(path)},
    }
    return replace(result, provenance=result.provenance | {"uncertainty": uncertainty})


def not_applicable_result(
    method: str,
    task: Task,
    split: str,
    example_set: ExampleSet,
    n_examples: int,
    reason: str,
    config: dict,
    out: Path,
) -> tuple[Result, Path]:
    """A result that says the method cannot serve this split, written to `out`."""
    result = build_result(method, task, split, example_set, n_examples, config, not_applicable=reason)
    return result, write_result(result, out)

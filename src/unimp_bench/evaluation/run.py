"""Where a task meets a model or a baseline: predictions are checked against examples and scored.

Every predictor (a baseline, or a trained UniMP through evaluation/checkpoint.py) hands over one
prediction per example, keyed by `example_id`, with the fields of the task's metric family
(evaluation/scoring.py). Predictions and examples must match one to one.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from unimp_bench.clip_scoring import ClipEmbedder
from unimp_bench.config import to_mapping
from unimp_bench.evaluation.predictions import (
    align,
    load_examples_to_score,
    read_predictions,
    rename_conflicts,
    split_of,
    write_predictions,
)
from unimp_bench.evaluation.predictor import Predictor
from unimp_bench.evaluation.records import ExampleRecord, not_applicable_result, record_scores
from unimp_bench.evaluation.scoring import ScoreInputs, ScoringSettings, scores_of
from unimp_bench.examples import ExampleSet
from unimp_bench.results import Result
from unimp_bench.tasks import Task


def score_predictions(
    task: Task,
    examples: pl.DataFrame,
    predictions: pl.DataFrame,
    settings: ScoringSettings,
    dataset_root: Path | None = None,
    predictions_root: Path | None = None,
    embedder: ClipEmbedder | None = None,
) -> tuple[dict[str, float], dict, ExampleRecord]:
    """The scores, the metric settings used, and the per-example statistics they come from (with the
    example ids, for intervals and paired tests)."""
    joined = align(examples, rename_conflicts(examples, predictions))
    statistics, used = task.kind.family.score(
        task, joined, ScoreInputs(settings, dataset_root, predictions_root, embedder)
    )
    extra = used.pop("group_scores", {})
    return scores_of(task, statistics, extra), used, (joined["example_id"].to_list(), statistics)


def _score_and_record(
    method: str,
    task: Task,
    split: str,
    example_set: ExampleSet,
    examples: pl.DataFrame,
    predictions: pl.DataFrame,
    predictions_path: Path,
    config: dict,
    settings: ScoringSettings,
    out: Path,
) -> tuple[Result, Path]:
    scores, used, statistics = score_predictions(
        task,
        examples,
        predictions,
        settings,
        Path(example_set.manifest["dataset"]["path"]),
        predictions_path.resolve().parent,
    )
    return record_scores(
        method,
        task,
        split,
        example_set,
        len(examples),
        config,
        scores,
        used,
        predictions_path,
        out,
        statistics=statistics,
    )


def score_file(
    task: Task,
    predictions_path: Path,
    example_set: ExampleSet,
    method: str,
    out: Path,
    split: str | None,
    settings: ScoringSettings,
) -> tuple[Result, Path]:
    """`unimp-bench score`: read predictions, score them against their examples, write a Result."""
    predictions = read_predictions(predictions_path, task.kind.family)
    split = split or split_of(predictions)
    examples = load_examples_to_score(example_set, task, split)
    config = {"scoring": to_mapping(settings) | {"clip": settings.clip.describe()}}
    return _score_and_record(
        method, task, split, example_set, examples, predictions, predictions_path, config, settings, out
    )


def evaluate_predictor(
    predictor: Predictor,
    task: Task,
    split: str,
    example_set: ExampleSet,
    out: Path,
    settings: ScoringSettings,
) -> tuple[Result, Path]:
    """Run a predictor on one split (tuned already where it tunes on valid). A split it cannot serve
    is recorded as a result without scores, with its reason, rather than skipped."""
    examples = load_examples_to_score(example_set, task, split)
    reason = predictor.not_applicable(task, split)
    if reason:
        return not_applicable_result(
            predictor.name, task, split, example_set, len(examples), reason, predictor.config(), out
        )
    predictions = predictor.predict(task, examples)
    predictions_path = write_predictions(
        predictions, out / "predictions" / f"{predictor.name}__{task.name}__{split}.parquet"
    )
    return _score_and_record(
        predictor.name,
        task,
        split,
        example_set,
        examples,
        predictions,
        predictions_path,
        predictor.config(),
        settings,
        out,
    )

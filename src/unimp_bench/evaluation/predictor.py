"""The seam between a task and whatever answers it: a baseline, or a trained UniMP."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import polars as pl

from unimp_bench.tasks import Task


@runtime_checkable
class Predictor(Protocol):
    """What evaluation asks of a method. `predict` returns one row per example, keyed by example_id,
    with the prediction fields of the task's metric family (evaluation/scoring.py); extra columns are
    saved with the predictions and not scored."""

    name: str

    def config(self) -> dict:
        """Every decision the method took, recorded in its Results."""
        ...

    def predict(self, task: Task, examples: pl.DataFrame) -> pl.DataFrame: ...

    def not_applicable(self, task: Task, split: str) -> str | None:
        """Why the method cannot serve this split (recorded as a result without scores), or None."""
        ...

    def tunes_on_valid(self, task: Task) -> bool:
        """Whether `tune(task, valid_examples)`, its choice of a setting (a threshold, an epoch) on
        the valid examples only, must run before `predict` on this task."""
        ...

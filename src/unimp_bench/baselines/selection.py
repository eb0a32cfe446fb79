"""Selection by a score threshold: keep the candidates scored at or above it, the threshold tuned on
valid examples only (the paper's selection baseline on top of a ranker)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from unimp_bench.errors import UnimpError
from unimp_bench.metrics import set_metrics

MAX_OPTIONS = 512  # thresholds tried: every distinct score, or this many quantiles of them


class SelectionThreshold:
    def __init__(self) -> None:
        self.threshold: float | None = None
        self.valid_f1: float | None = None

    @staticmethod
    def apply(
        candidates: Sequence[Sequence[int]], scores: Sequence[np.ndarray], threshold: float
    ) -> list[list[int]]:
        return [
            [int(c) for c, s in zip(row, row_scores) if s >= threshold]
            for row, row_scores in zip(candidates, scores)
        ]

    def tune(
        self,
        candidates: Sequence[Sequence[int]],
        scores: Sequence[np.ndarray],
        positives: Sequence[Sequence[int]],
    ) -> None:
        """The threshold with the best example-averaged F1 on these (valid) examples; ties go to the
        higher threshold (fewer selections)."""
        if not candidates:
            raise UnimpError("no valid selection examples to tune the selection threshold on")
        values = np.unique(np.concatenate([np.asarray(s, dtype=np.float64) for s in scores]))
        if len(values) > MAX_OPTIONS:
            values = np.unique(np.quantile(values, np.linspace(0.0, 1.0, MAX_OPTIONS)))
        best = max(
            values.tolist(),
            key=lambda t: (set_metrics(self.apply(candidates, scores, t), positives)["F1"], t),
        )
        self.threshold = float(best)
        self.valid_f1 = set_metrics(self.apply(candidates, scores, best), positives)["F1"]

    def select(self, candidates: Sequence[Sequence[int]], scores: Sequence[np.ndarray]) -> list[list[int]]:
        if self.threshold is None:
            raise UnimpError("the selection threshold must be tuned on valid examples first")
        return self.apply(candidates, scores, self.threshold)

    def describe(self) -> dict:
        if self.threshold is None:
            return {}
        return {
            "selection_threshold": self.threshold,
            "threshold_tuned_on": "valid",
            "valid_F1": self.valid_f1,
        }

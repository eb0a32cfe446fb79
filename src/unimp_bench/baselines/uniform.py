"""Uniform: the chance level of a ranking task, computed rather than sampled.

Every candidate gets the same score, so under the `expected` tie rule (the default) each metric is
exactly its expectation over uniformly random rankings of the split's candidates: the catalog, or the
held-out domain's catalog on the new_domain splits, less the user's earlier items, as every ranker
ranks it. Leaving out the user's earlier items matters: on the synthetic corpus's zero-shot
new_domain, chance is HR@10 0.204, not 10 / 58 = 0.172 of the whole held-out catalog.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from unimp_bench.config import from_mapping, to_mapping
from unimp_bench.data.contract import PreparedDataset
from unimp_bench.errors import UnimpError
from unimp_bench.ranking import SHOWN_TOP, SortedScores, excluded_items, ranking_predictions
from unimp_bench.tasks import Task


@dataclass(frozen=True)
class UniformParams:
    exclude_seen: bool = True  # leave out items the user interacted with before the target
    seed: int = 0  # of the random order of the items a prediction shows (no metric reads it)


class UniformPredictor:
    name = "uniform"

    def __init__(self, params: UniformParams, dataset: PreparedDataset):
        self.params = params
        self.dataset = dataset
        self.ranking = SortedScores(np.zeros(dataset.catalog_size))

    @classmethod
    def from_spec(cls, spec, dataset: PreparedDataset) -> UniformPredictor:
        return cls(from_mapping(UniformParams, spec.params, f"{spec.name} params"), dataset)

    def config(self) -> dict:
        return {"params": to_mapping(self.params), "scores": "equal for every candidate"}

    def not_applicable(self, task: Task, split: str) -> str | None:
        return None  # it learns nothing, so every split can be ranked

    @classmethod
    def tunes_on_valid(cls, task: Task) -> bool:
        return False

    def predict(self, task: Task, examples: pl.DataFrame) -> pl.DataFrame:
        if task.metric_family != "ranking":
            raise UnimpError(f"uniform does not serve task {task.name}")
        left_out = excluded_items(self.dataset, examples, self.params.exclude_seen)
        rng = np.random.default_rng(self.params.seed)
        greater, ties, shown = [], [], []
        for row, target in enumerate(examples["target_item"].to_list()):
            excluded = None if left_out is None else left_out[row]
            g, t = self.ranking.counts(target, excluded)
            greater.append(g)
            ties.append(t)
            candidates = np.arange(self.dataset.catalog_size)
            if excluded is not None:
                candidates = np.setdiff1d(candidates, excluded[excluded != target])
            shown.append(rng.permutation(candidates)[:SHOWN_TOP].tolist())
        return ranking_predictions(examples["example_id"], greater, ties, shown)

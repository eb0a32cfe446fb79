"""Popularity: one score per item, its number of training interactions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from unimp_bench.baselines.selection import SelectionThreshold
from unimp_bench.config import check_choices, from_mapping, to_mapping
from unimp_bench.data.contract import PreparedDataset
from unimp_bench.data.transfer import no_item_evidence
from unimp_bench.errors import UnimpError
from unimp_bench.ranking import SHOWN_TOP, SortedScores, excluded_items, ranking_predictions
from unimp_bench.tasks import Task


@dataclass(frozen=True)
class PopularityParams:
    exclude_seen: bool = True  # leave out items the user interacted with before the target
    # train: the train split of training users (what any model may learn from). all: every
    # interaction, test targets included: it leaks the answers, and exists only to reproduce
    # published numbers that were computed that way (the S3-Rec PopRec figures are)
    counts_from: Literal["train", "all"] = "train"

    def __post_init__(self) -> None:
        check_choices(self, "pop params: ")


def all_counts(dataset: PreparedDataset) -> np.ndarray:
    """Interactions per item over every split and user (test targets included)."""
    items = dataset.catalog_size
    every = dataset.scan("interactions").select("item_idx").collect()
    return np.bincount(every["item_idx"].to_numpy(), minlength=items).astype(np.float64)


def training_counts(dataset: PreparedDataset) -> np.ndarray:
    """Interactions per item over the train split of training users: what any model may learn from."""
    items = dataset.catalog_size
    train = dataset.training_scan().select("item_idx").collect()
    return np.bincount(train["item_idx"].to_numpy(), minlength=items).astype(np.float64)


class PopularityPredictor:
    name = "pop"

    def __init__(self, params: PopularityParams, dataset: PreparedDataset):
        self.params = params
        self.dataset = dataset
        self.counts = training_counts(dataset) if params.counts_from == "train" else all_counts(dataset)
        self.ranking = SortedScores(self.counts)
        self.selection = SelectionThreshold()

    @property
    def threshold(self) -> float | None:
        return self.selection.threshold

    @classmethod
    def from_spec(cls, spec, dataset: PreparedDataset) -> PopularityPredictor:
        return cls(from_mapping(PopularityParams, spec.params, f"{spec.name} params"), dataset)

    def config(self) -> dict:
        source = {"train": "train split of training users", "all": "every interaction (leaks test targets)"}
        config = {"params": to_mapping(self.params), "popularity_from": source[self.params.counts_from]}
        return config | self.selection.describe()

    def predict(self, task: Task, examples: pl.DataFrame) -> pl.DataFrame:
        if task.builder == "recommendation":
            return self._rank(examples)
        if task.builder == "selection":
            candidates = examples["candidates"].to_list()
            selected = self.selection.select(candidates, self._candidate_counts(candidates))
            return examples.select("example_id", pl.Series("selected", selected))
        raise UnimpError(f"popularity does not serve task {task.name}")

    def _rank(self, examples: pl.DataFrame) -> pl.DataFrame:
        left_out = excluded_items(self.dataset, examples, self.params.exclude_seen)
        greater, ties, shown = [], [], []
        for target, excluded in zip(examples["target_item"].to_list(), left_out or [None] * len(examples)):
            g, t = self.ranking.counts(target, excluded)
            greater.append(g)
            ties.append(t)
            shown.append(
                self.ranking.top(SHOWN_TOP, set(excluded.tolist()) if excluded is not None else None)
            )
        return ranking_predictions(examples["example_id"], greater, ties, shown)

    def _candidate_counts(self, candidates: list[list[int]]) -> list[np.ndarray]:
        return [self.counts[np.asarray(row, dtype=np.int64)] for row in candidates]

    def select_at(self, candidates: list[list[int]], threshold: float) -> list[list[int]]:
        return SelectionThreshold.apply(candidates, self._candidate_counts(candidates), threshold)

    def not_applicable(self, task: Task, split: str) -> str | None:
        return no_item_evidence(self.name, split) if self.params.counts_from == "train" else None

    @classmethod
    def tunes_on_valid(cls, task: Task) -> bool:
        return task.builder == "selection"  # the selection threshold

    def tune(self, task: Task, valid: pl.DataFrame) -> None:
        """The popularity threshold with the best example-averaged F1 on valid examples only."""
        candidates = valid["candidates"].to_list()
        self.selection.tune(candidates, self._candidate_counts(candidates), valid["positives"].to_list())

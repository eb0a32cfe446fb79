"""The bm25 search baseline: the whole catalog ranked by BM25 (retrieval.py) of the example's query."""

from __future__ import annotations

import numpy as np
import polars as pl

from unimp_bench.config import from_mapping, to_mapping
from unimp_bench.errors import UnimpError
from unimp_bench.ranking import (
    SHOWN_TOP,
    SortedScores,
    excluded_items,
    ranking_predictions,
)
from unimp_bench.retrieval import BM25Ranker, BM25Settings, check_fields, item_documents


class BM25Predictor:
    """Search baseline: rank the whole catalog by BM25 of the example's query."""

    name = "bm25"

    def __init__(self, settings: BM25Settings, dataset):
        self.settings = settings
        self.dataset = dataset
        items = dataset.scan("items").collect()
        check_fields(settings.fields, "bm25 fields")
        self.ranker = BM25Ranker(item_documents(items, settings.fields), settings)

    @classmethod
    def from_spec(cls, spec, dataset) -> BM25Predictor:
        return cls(from_mapping(BM25Settings, spec.params, f"{spec.name} params"), dataset)

    def config(self) -> dict:
        return {"params": to_mapping(self.settings)}

    def not_applicable(self, task, split: str) -> str | None:
        return None  # it reads item texts and the example's own history, never a trained vector

    @classmethod
    def tunes_on_valid(cls, task) -> bool:
        return False

    def predict(self, task, examples: pl.DataFrame) -> pl.DataFrame:
        if task.builder != "search":
            raise UnimpError(f"bm25 does not serve task {task.name}")
        # one score vector per distinct query, dropped once its examples are done (bounded memory)
        greater = np.zeros(len(examples))
        ties = np.zeros(len(examples))
        shown: list[list[int]] = [[] for _ in range(len(examples))]
        targets = examples["target_item"].to_list()
        seen = excluded_items(self.dataset, examples, self.settings.exclude_seen)
        groups = examples.with_row_index("row").group_by("query", maintain_order=True).agg(pl.col("row"))
        for query, rows in groups.iter_rows():
            ranking = SortedScores(self.ranker.scores(query))
            top = ranking.top(SHOWN_TOP)
            for row in rows:
                excluded = None if seen is None else seen[row]
                greater[row], ties[row] = ranking.counts(targets[row], excluded)
                shown[row] = top if excluded is None else ranking.top(SHOWN_TOP, set(excluded.tolist()))
        return ranking_predictions(examples["example_id"], greater, ties, shown)

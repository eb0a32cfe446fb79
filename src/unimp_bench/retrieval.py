"""BM25 over item text (rank-bm25's Okapi BM25), with one score vector per distinct query: what the
image_generation task retrieves its reference items with, and what the bm25 baselines rank by.

Item documents join the item's title, brand, categories and description; queries and documents go
through the same lower-casing word tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from unimp_bench.errors import UnimpError
from unimp_bench.metrics import words
from unimp_bench.ranking import best_first, first_items

DOCUMENT_FIELDS = ("title", "brand", "categories", "description")


@dataclass(frozen=True)
class BM25Settings:
    k1: float = 1.5
    b: float = 0.75
    epsilon: float = 0.25
    fields: tuple[str, ...] = DOCUMENT_FIELDS
    max_cached_queries: int = 256
    # the bm25 baseline: leave the user's earlier items out of the ranking (the benchmark's protocol;
    # false keeps them). bm25-personal and ZAM have the same switch at the top of their params.
    exclude_seen: bool = True


# BM25Ranker.top keeps only the head of each query's ranking (a few items are ever asked for)
CACHED_HEAD = 64


def tokenize(text: str) -> list[str]:
    return [w for w in words(text) if any(c.isalnum() for c in w)]


def check_fields(fields: Sequence[str], what: str) -> None:
    """One sentence when `fields` (of the setting `what`) names a field items do not have."""
    unknown = [f for f in fields if f not in DOCUMENT_FIELDS]
    if unknown:
        raise UnimpError(f"{what} must come from {', '.join(DOCUMENT_FIELDS)}; got {', '.join(unknown)}")


def item_documents(items: pl.DataFrame, fields: Sequence[str]) -> list[list[str]]:
    """One token list per item, indexed by item_idx (items must hold every idx 0..n-1)."""
    ordered = items.sort("item_idx")
    if not ordered["item_idx"].equals(pl.Series("item_idx", range(len(ordered)), dtype=pl.Int32)):
        raise ValueError("items.parquet must hold every item_idx from 0 to n-1")
    columns = {
        field: (
            ordered[field].list.join(" ").fill_null("")
            if ordered.schema[field] == pl.List(pl.String)
            else ordered[field].cast(pl.String).fill_null("")
        ).to_list()
        for field in fields
    }
    return [tokenize(" ".join(columns[field][i] for field in fields)) for i in range(len(ordered))]


class BM25Ranker:
    def __init__(self, documents: list[list[str]], settings: BM25Settings = BM25Settings()):
        from rank_bm25 import BM25Okapi

        self.settings = settings
        self.num_items = len(documents)
        # rank-bm25 divides by the average document length; an all-empty catalog gets one dummy token.
        safe = [doc if doc else ["\x00"] for doc in documents]
        self._bm25 = BM25Okapi(safe, k1=settings.k1, b=settings.b, epsilon=settings.epsilon)
        self._heads: dict[str, np.ndarray] = {}

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every item (index = item_idx) for the query."""
        return np.asarray(self._bm25.get_scores(tokenize(query)), dtype=np.float64)

    def top(self, query: str, count: int, exclude: int | None = None) -> list[int]:
        """The `count` best items, ties broken by item_idx, optionally without one item; the head of
        each query's ranking is cached, since every example whose target shares a category asks it."""
        head = self._heads.get(query)
        if head is None:
            head = best_first(self.scores(query))[:CACHED_HEAD]
            if len(self._heads) >= self.settings.max_cached_queries:
                self._heads.pop(next(iter(self._heads)))
            self._heads[query] = head
        if count >= len(head) and len(head) < self.num_items:  # more than the cached head holds
            head = best_first(self.scores(query))
        return first_items(head, count, {exclude} if exclude is not None else None)

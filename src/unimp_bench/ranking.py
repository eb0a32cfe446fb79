"""Ranking helpers that models and baselines share: the items a ranking leaves out (the user's earlier
items, those outside the split's candidates) and turning score vectors into the exact (greater, ties)
rank counts the ranking metrics read."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import polars as pl

from unimp_bench.data.contract import PreparedDataset

SHOWN_TOP = 10  # items listed per example in ranking predictions, for inspection only


def best_first(scores: np.ndarray) -> np.ndarray:
    """Item ids by descending score, ties broken by item id."""
    return np.lexsort((np.arange(len(scores)), -np.asarray(scores)))


def first_items(order: Iterable[int], count: int, excluded: set[int] | None = None) -> list[int]:
    """The first `count` items of `order` that are not excluded."""
    picked = []
    for item in order:
        item = int(item)
        if not excluded or item not in excluded:
            picked.append(item)
            if len(picked) == count:
                break
    return picked


class SortedScores:
    """One score vector over the catalog, sorted once so each target's counts cost a binary search."""

    def __init__(self, scores: np.ndarray):
        self.scores = np.asarray(scores, dtype=np.float64)
        self.sorted = np.sort(self.scores)
        self.order = best_first(self.scores)

    def counts(self, target: int, excluded: np.ndarray | None = None) -> tuple[float, float]:
        """Items scored above the target and other items tied with it, optionally leaving out
        `excluded` items (never the target itself)."""
        value = self.scores[target]
        below_or_equal = np.searchsorted(self.sorted, value, side="right")
        strictly_below = np.searchsorted(self.sorted, value, side="left")
        greater = len(self.sorted) - below_or_equal
        ties = below_or_equal - strictly_below - 1
        if excluded is not None and len(excluded):
            excluded = excluded[excluded != target]
            values = self.scores[excluded]
            greater -= int((values > value).sum())
            ties -= int((values == value).sum())
        return float(greater), float(ties)

    def top(self, count: int, excluded: set[int] | None = None) -> list[int]:
        if not excluded:
            return self.order[:count].tolist()
        return first_items(self.order, count, excluded)


def mask_seen(scores: np.ndarray, seen: list[np.ndarray] | None, targets: np.ndarray) -> np.ndarray:
    """Set each row's earlier items (never its target) to -inf in the [rows, items] scores, in place,
    and return them: those items then rank below every real score and tie with no target, so the
    rank counts are those of the catalog without them. `seen` None leaves the scores as they are."""
    if seen is None:
        return scores
    for row, (items, target) in enumerate(zip(seen, np.asarray(targets).tolist())):
        if len(items):
            scores[row, items[items != target]] = -np.inf
    return scores


def earlier_items(histories: dict[int, np.ndarray], users, positions) -> list[np.ndarray]:
    """Each (user, target position)'s earlier items, from every user's chronological item history."""
    return [histories[u][:p] for u, p in zip(np.asarray(users).tolist(), np.asarray(positions).tolist())]


def leave_out(
    scores: np.ndarray, seen: list[np.ndarray] | None, targets: np.ndarray, outside: np.ndarray | None
) -> np.ndarray:
    """`mask_seen`, then every item outside the split's candidates (`outside`, None: none) set to
    -inf, in place; targets are candidates, so none of them is left out."""
    mask_seen(scores, seen, targets)
    if outside is not None:
        scores[:, outside] = -np.inf
    return scores


def ranking_predictions(
    example_ids: pl.Series, greater: Iterable[float], ties: Iterable[float], shown: list[list[int]]
) -> pl.DataFrame:
    """The prediction frame of a score-based ranker: exact rank counts plus the top items shown."""
    return pl.DataFrame(
        {"example_id": example_ids, "greater": greater, "ties": ties, "ranked": shown},
        schema_overrides={"greater": pl.Float64, "ties": pl.Float64, "ranked": pl.List(pl.Int64)},
    )


def seen_items(dataset: PreparedDataset, examples: pl.DataFrame) -> list[np.ndarray]:
    """For each example, every item its user interacted with before the target position."""
    keys = examples.select("user_idx", "target_pos").with_row_index("row")
    earlier = (
        dataset.scan("interactions")
        .select("user_idx", "pos", "item_idx")
        .join(keys.lazy(), on="user_idx")
        .filter(pl.col("pos") < pl.col("target_pos"))
        .group_by("row")
        .agg(pl.col("item_idx"))
        .collect()
    )
    by_row = dict(zip(earlier["row"].to_list(), earlier["item_idx"].to_list()))
    return [np.asarray(by_row.get(i, []), dtype=np.int64) for i in range(len(examples))]


def examples_split(examples: pl.DataFrame) -> str | None:
    splits = examples["split"].unique().to_list() if "split" in examples.columns else []
    return splits[0] if len(splits) == 1 else None


def outside_candidates(dataset: PreparedDataset, split: str | None) -> np.ndarray | None:
    """The items a ranking on `split` must leave out (those outside its candidate catalog), or None."""
    from unimp_bench.data.transfer import candidate_items

    chosen = candidate_items(dataset, split) if split else None
    if chosen is None:
        return None
    catalog = dataset.catalog_size
    keep = np.zeros(catalog, dtype=bool)
    keep[chosen] = True
    return np.flatnonzero(~keep).astype(np.int64)


def excluded_items(
    dataset: PreparedDataset, examples: pl.DataFrame, exclude_seen: bool
) -> list[np.ndarray] | None:
    """Per example, the items its ranking leaves out: the user's earlier items (with `exclude_seen`)
    and every item outside the split's candidates (on the new_domain splits, by default, all but the
    held-out domain's). None when nothing is left out."""
    outside = outside_candidates(dataset, examples_split(examples))
    seen = seen_items(dataset, examples) if exclude_seen else None
    if outside is None:
        return seen
    if seen is None:
        return [outside] * len(examples)
    return [np.union1d(items, outside) for items in seen]

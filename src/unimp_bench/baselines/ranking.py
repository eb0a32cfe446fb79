"""Turning score vectors into the exact (greater, ties) rank counts the ranking metrics read."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import polars as pl

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

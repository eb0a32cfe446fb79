"""Turning score vectors into the exact (greater, ties) rank counts the ranking metrics read."""

from __future__ import annotations

import numpy as np


class SortedScores:
    """One score vector over the catalog, sorted once so each target's counts cost a binary search."""

    def __init__(self, scores: np.ndarray):
        self.scores = np.asarray(scores, dtype=np.float64)
        self.sorted = np.sort(self.scores)
        # best first, ties by item id: the list shown for inspection
        self.order = np.lexsort((np.arange(len(self.scores)), -self.scores))

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
        picked = []
        for item in self.order:
            if int(item) not in excluded:
                picked.append(int(item))
                if len(picked) == count:
                    break
        return picked

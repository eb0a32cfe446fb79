"""Early stopping on a validation score, keeping the best epoch's weights in memory."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any


class BestEpoch:
    """Tracks the best validation score; `update` says when `patience` epochs went by without a
    better one. A higher score is better unless `higher_is_better` is false (an error such as RMSE)."""

    def __init__(self, patience: int, higher_is_better: bool = True):
        self.patience = patience
        self.sign = 1.0 if higher_is_better else -1.0
        self.score = -math.inf * self.sign
        self.epoch = 0
        self.state: Any = None
        self.waited = 0

    def update(self, epoch: int, score: float, snapshot: Callable[[], Any]) -> bool:
        """Record `score` of `epoch`; `snapshot()` (a copy of the weights) is taken only when it is the
        best so far. Returns True when training should stop."""
        if self.sign * score > self.sign * self.score:
            self.score, self.epoch, self.waited = score, epoch, 0
            self.state = copy.deepcopy(snapshot())
            return False
        self.waited += 1
        return self.waited >= self.patience

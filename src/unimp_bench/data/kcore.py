"""Pure interaction-table transforms: de-duplication, iterative k-core, chronological positions, splits.

Every function takes and returns a polars frame with at least user_id, asin, ts_ms and an `order`
tie-breaker (raw file order), so the same input always gives the same output.
"""

from __future__ import annotations

import polars as pl


def drop_duplicate_pairs(frame: pl.DataFrame) -> pl.DataFrame:
    """Keep the earliest review of each (user, item); equal times keep the one earlier in the raw file."""
    return frame.sort("ts_ms", "order").unique(subset=["user_id", "asin"], keep="first", maintain_order=True)


def k_core(frame: pl.DataFrame, k: int) -> tuple[pl.DataFrame, int]:
    """Iteratively drop users and items with fewer than k interactions until none is left; returns rounds."""
    rounds = 0
    if k <= 1:
        return frame, rounds
    while True:
        rounds += 1
        kept = frame.filter((pl.len().over("user_id") >= k) & (pl.len().over("asin") >= k))
        if kept.height == frame.height:
            return kept, rounds
        frame = kept


def chronological_positions(frame: pl.DataFrame, user: str = "user_id") -> pl.DataFrame:
    """0-based position of each interaction in its user's history, ordered by time then raw order."""
    return frame.sort(user, "ts_ms", "order").with_columns(
        pl.int_range(pl.len(), dtype=pl.Int32).over(user).alias("pos")
    )


def leave_last_out(frame: pl.DataFrame, user: str = "user_id") -> pl.DataFrame:
    """Last interaction of each user = test, second last = valid, the rest = train (needs `pos`)."""
    last = pl.col("pos").max().over(user)
    split = (
        pl.when(pl.col("pos") == last)
        .then(pl.lit("test"))
        .when(pl.col("pos") == last - 1)
        .then(pl.lit("valid"))
        .otherwise(pl.lit("train"))
    )
    return frame.with_columns(split.alias("split"))
